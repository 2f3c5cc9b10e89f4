"""Resident memory per resting order in the engine at 1,000,000 resting orders.

Problem: a shard keeps every resting order in memory, so bytes per order bound how many
orders one host can hold. We rest N non-crossing limit orders (bids 1..49, asks 51..99 over 10
binary markets and 1,000 accounts) through the normal ``apply`` path and divide the growth of
resident memory (VmRSS) by N. Run with and without client order ids, because the per-account
de-duplication table (client_order_id -> server_order_id) is kept for every accepted order.

    .venv/bin/python -m bench.memory [--orders N] [--client-ids] [--mypyc [DIR]]

Below the RSS figure, a breakdown says where the bytes go, from ``sys.getsizeof`` of the
engine's own objects rounded up to the allocator's 16-byte size classes (what is left of the
RSS growth is allocator slack and pages not yet returned).

``--mypyc`` also measures the engine compiled with mypyc and prints both builds side by side:
``scripts/build_engine.py --into`` builds a copy (in DIR, or a temporary directory; a DIR
holding a build of the current sources is reused) and each build is measured in a fresh
subprocess, the compiled one importing that copy, so the working tree stays pure Python.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orderbook_host.engine.exchange as exchange_module
from bench._engine_build import REPO, build_env, ensure_build
from orderbook_host.engine import CreateMarket, Deposit, Exchange, PlaceOrder

# (key, label) of the breakdown rows, in print order; each is bytes per resting order.
PARTS = [
    ("order", "order records"),
    ("terms", "order terms (GTD only)"),
    ("index", "order index (dict oid -> order)"),
    ("oid", "order id ints (index keys)"),
    ("lists", "account order lists"),
    ("levels", "price level queues"),
    ("dedup", "client id table (dict + strs)"),
    ("other", "rest of RSS growth"),
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096


def alloc(obj: object) -> int:
    """Bytes the allocator hands out for ``obj`` (pymalloc rounds up to 16-byte classes)."""
    return (sys.getsizeof(obj) + 15) // 16 * 16


def breakdown(ex: Exchange) -> dict[str, float]:
    """Bytes per resting order of each engine structure that grows with resting orders."""
    n = len(ex.orders) or 1
    shared_terms: set[int] = set()
    for m in ex.markets.values():
        shared_terms.update(id(t) for t in (*m.book.plain_terms, *m.book.post_only_terms))
    own_terms = {id(o.terms): o.terms for o in ex.orders.values() if id(o.terms) not in shared_terms}
    keys = {id(k) for k in ex.orders}
    parts = {
        "order": sum(alloc(o) for o in ex.orders.values()),
        "terms": sum(alloc(t) for t in own_terms.values()),
        "index": sys.getsizeof(ex.orders),
        # Ints from -5 to 256 are preallocated by CPython and cost nothing per use.
        "oid": sum(alloc(k) for k in ex.orders if not -5 <= k <= 256),
        "lists": sum(sys.getsizeof(a.orders) for a in ex.accounts.values()),
        "levels": sum(
            sys.getsizeof(level.orders)
            for m in ex.markets.values()
            for side in (m.book.bids, m.book.asks)
            for level in side.levels.values()
        ),
        "dedup": sum(
            sys.getsizeof(a.dedup)
            + sum(alloc(c) for c in a.dedup)
            + sum(alloc(v) for v in a.dedup.values() if id(v) not in keys and not -5 <= v <= 256)
            for a in ex.accounts.values()
        ),
    }
    return {k: v / n for k, v in parts.items()}


def measure(orders: int, client_ids: bool) -> dict[str, Any]:
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
    for i in range(orders):
        is_buy = i % 2 == 0
        price = rng.randint(1, 49) if is_buy else rng.randint(51, 99)
        coid = f"c-{i:08d}" if client_ids else None
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
    growth = rss_bytes() - before
    resting = len(ex.orders)
    parts = breakdown(ex)
    parts["other"] = growth / resting - sum(parts.values())
    build = "mypyc" if exchange_module.__file__.endswith(".so") else "pure Python"
    return {
        "build": build,
        "module": exchange_module.__file__,
        "resting": resting,
        "client_ids": client_ids,
        "rss_growth": growth,
        "bytes_per_order": growth / resting,
        "parts": parts,
        "orders_per_s": resting / secs,
    }


def in_subprocess(args: argparse.Namespace, where: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.memory", "--json", "--orders", str(args.orders)]
    if args.client_ids:
        cmd.append("--client-ids")
    env = build_env(where) if where != REPO else None
    ran = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True)
    if ran.returncode:
        raise SystemExit(f"measuring in {where} failed:\n{ran.stderr}")
    result: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    return result


def report(results: list[dict[str, Any]]) -> None:
    width = 14
    print(f"{'':<34}" + "".join(f"{r['build']:>{width}}" for r in results))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:<34}" + "".join(f"{v:>{width}}" for v in values))

    row("orders resting", [f"{r['resting']:,}" for r in results])
    row("client_order_id", ["yes" if r["client_ids"] else "no" for r in results])
    row("RSS growth (MiB)", [f"{r['rss_growth'] / 2**20:,.1f}" for r in results])
    row("bytes per resting order", [f"{r['bytes_per_order']:,.0f}" for r in results])
    for key, label in PARTS:
        row(f"  {label}", [f"{r['parts'][key]:,.1f}" for r in results])
    row("placement rate (orders/s)", [f"{r['orders_per_s']:,.0f}" for r in results])
    for r in results:
        print(f"{r['build']}: {r['module']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--client-ids", action="store_true", help="give every order a client_order_id")
    parser.add_argument(
        "--mypyc",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="also measure the engine compiled with mypyc (built into DIR or a temporary directory)",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one build, as JSON
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.orders, args.client_ids)))
        return
    if args.mypyc is None:
        report([measure(args.orders, args.client_ids)])
        return
    with contextlib.ExitStack() as stack:
        where = Path(args.mypyc or stack.enter_context(tempfile.TemporaryDirectory())).resolve()
        error = ensure_build(where)
        if error:
            raise SystemExit(error)
        results = [in_subprocess(args, REPO), in_subprocess(args, where)]
    if results[1]["build"] != "mypyc":
        raise SystemExit(f"the subprocess imported {results[1]['module']}, not the build in {where}")
    report(results)


if __name__ == "__main__":
    main()
