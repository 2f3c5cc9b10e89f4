"""Orderbook host: the stateful shard process (risk, matching, accounts, WAL, snapshots)."""
