"""The host's written-out sequencing (`_sequence`) routes exactly as `channels_of` says, numbers
each channel 1, 2, 3, ... and renders public payloads without account fields."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from emlib.blobstore.local import LocalBlobStore
from orderbook_host.engine import Exchange
from orderbook_host.engine import commands as cmds
from orderbook_host.engine import events as ev
from orderbook_host.host import OrderbookHost, channels_of, render_event
from orderbook_host.realtime import RealtimeHub
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import WriteAheadLog

PRIVATE = {"account", "maker_account", "taker_account", "client_order_id"}


def _events() -> list[list[ev.Event]]:
    """Every kind of event: markets, deposits, resting and crossing orders (self-trade too), a
    cancel, a replace, a halt, a resolution."""
    ex = Exchange()
    out: list[list[ev.Event]] = []

    def run(cmd: cmds.Command) -> None:
        outcome = ex.apply(cmd)
        assert outcome.code is None, outcome.code
        out.append(outcome.events)

    run(cmds.CreateMarket("R-1", "binary", 1))
    for account in ("alice", "bob"):
        run(cmds.Deposit(account, 10**6, 1))
    for index in range(12):
        account = ("alice", "bob")[index % 3 == 0]
        side = ("buy", "sell")[index % 2]
        run(
            cmds.PlaceOrder(
                ex.next_order_id, account, "R-1", side, 1 + index % 3, 2 + index, price=48 + index % 5
            )
        )
    resting = ex.next_order_id
    run(cmds.PlaceOrder(resting, "alice", "R-1", "buy", 5, 30, price=20))
    run(cmds.ReplaceOrder("alice", resting, 3, 40))
    run(cmds.CancelOrder("alice", resting, 41))
    run(cmds.SetMarketStatus("R-1", "halted", 42))
    run(cmds.SetMarketStatus("R-1", "open", 43))
    run(cmds.ResolveMarket("R-1", 100, 44))
    return out


def test_sequence_follows_channels_of_and_numbers_each_channel_from_one(tmp_path: Path) -> None:
    host = OrderbookHost(
        shard_id="r",
        wal=WriteAheadLog.open(tmp_path / "wal"),
        snapshots=SnapshotStore(LocalBlobStore(tmp_path / "objects")),
        hub=RealtimeHub("r", 100),
    )
    try:
        counts: Counter[str] = Counter()
        kinds: set[type] = set()
        for seq, events in enumerate(_events(), start=1):
            messages = host._sequence(seq, 1000 + seq, events)
            expected = [(channel, event) for event in events for channel in channels_of(event)]
            assert [(m[0], m[3]) for m in messages] == expected
            for channel, number, ts_ms, event in messages:
                counts[channel] += 1
                assert number == counts[channel] and ts_ms == 1000 + seq
                kinds.add(type(event))
        assert host.hub.counters() == dict(sorted(counts.items()))
        assert {ev.Trade, ev.OrderAccepted, ev.OrderCancelled, ev.OrderReplaced, ev.BookLevel} <= kinds
        assert {ev.BalanceChanged, ev.PositionChanged, ev.MarketStatusChanged, ev.MarketSettled} <= kinds
    finally:
        host.wal.close()


def test_public_payloads_carry_no_account_fields_and_private_ones_do() -> None:
    for events in _events():
        for event in events:
            full = event.to_payload()
            for channel in channels_of(event):
                payload = render_event(channel, event)
                if channel.startswith("market:"):
                    assert not PRIVATE & payload.keys()
                    assert payload == {k: v for k, v in full.items() if k not in PRIVATE}
                else:
                    assert payload == full
    assert render_event("market:X", {"account": "kept as given"}) == {"account": "kept as given"}
