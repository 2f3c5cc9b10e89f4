"""Resident memory per resting order in the engine at 1,000,000 resting orders.

Problem: a shard keeps every resting order in memory, so bytes per order bound how many
orders one host can hold. We rest N non-crossing limit orders (bids 1..49, asks 51..99 over 10
binary markets and 1,000 accounts) through the normal ``apply`` path and divide the growth of
resident memory (VmRSS) by N. Run with and without client order ids, because the per-account
de-duplication table (client_order_id -> server_order_id) is kept for every accepted order.

    .venv/bin/python -m bench.memory [--orders N] [--client-ids]

For the mypyc build: ``scripts/build_engine.py --into DIR`` and run this with
``PYTHONPATH=DIR:.`` from outside the checkout (so the copy's engine is the one imported).
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from orderbook_host.engine import CreateMarket, Deposit, Exchange, PlaceOrder


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--client-ids", action="store_true", help="give every order a client_order_id")
    args = parser.parse_args(argv)
    rng = random.Random(7)
    symbols = [f"SYM-{i}" for i in range(10)]
    accounts = [f"acct-{i}" for i in range(1000)]
    ex = Exchange()
    for s in symbols:
        ex.apply(CreateMarket(s, "binary", 0))
    for a in accounts:
        ex.apply(Deposit(a, 10**12, 0))
    # Commands are built inside the loop and dropped right after, so the growth is engine state
    # (client ids included: the dedup table keeps them).
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    apply = ex.apply
    for i in range(args.orders):
        is_buy = i % 2 == 0
        price = rng.randint(1, 49) if is_buy else rng.randint(51, 99)
        coid = f"c-{i:08d}" if args.client_ids else None
        side = "buy" if is_buy else "sell"
        apply(
            PlaceOrder(
                i + 1,
                accounts[i % 1000],
                symbols[i % 10],
                side,
                rng.randint(1, 50),
                i,
                price=price,
                client_order_id=coid,
            )
        )
    secs = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    resting = len(ex.orders)
    print(f"{'orders resting':<28} {resting:>14,}")
    print(f"{'client_order_id':<28} {'yes' if args.client_ids else 'no':>14}")
    print(f"{'RSS growth (MiB)':<28} {(after - before) / 2**20:>14,.1f}")
    print(f"{'bytes per resting order':<28} {(after - before) / resting:>14,.0f}")
    print(f"{'placement rate (orders/s)':<28} {resting / secs:>14,.0f}")


if __name__ == "__main__":
    main()
