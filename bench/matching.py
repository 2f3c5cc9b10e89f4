"""Matching benchmark: our engine (risk checks on) against order books from PyPI, same events.

Problem: the orderbook host's throughput per shard decides how many shards we need, and we
want to know where a pure-Python engine stands next to what PyPI offers. One seeded workload
(10 symbols; ~60 % limit, 25 % cancel, 15 % market orders; prices clustered round the middle
of 1..99 so books cross often) is generated once and fed to every engine in the same run.

    .venv/bin/python -m bench.matching [--events N] [--seed S] [--profile] [--mypyc [DIR]]

``--mypyc`` adds a row for our engine compiled with mypyc: ``scripts/build_engine.py --into``
builds a copy of the engine (in DIR, or a temporary directory; a DIR already holding a build
is reused while its sources match the checkout's) and the same workload runs in a subprocess
that imports that copy, so the working tree stays pure Python.

Peers are optional: an engine whose package does not import is listed with the reason.
Peers do no risk checks, no self-trade prevention and no event output, and most are
single-symbol (we keep one book per symbol for them). Where a peer lacks IOC market orders we
emulate them (an aggressive limit, then cancel of what rests), which we note in the table.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import logging
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._engine_build import build_env, ensure_build
from orderbook_host.build_info import ENGINE_FILE, engine_build
from orderbook_host.engine import CancelOrder, CreateMarket, Deposit, Exchange, PlaceOrder

# A workload event: ("L", sym, is_buy, price, qty, acct) | ("M", sym, is_buy, qty, acct) | ("C", target)
# where ``target`` is the index (in the workload) of the limit order to cancel.
Event = tuple[Any, ...]

N_SYMBOLS = 10
N_ACCOUNTS = 50


def make_workload(seed: int, n: int) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    limits: list[int] = []
    for i in range(n):
        r = rng.random()
        sym = rng.randrange(N_SYMBOLS)
        is_buy = rng.random() < 0.5
        acct = rng.randrange(N_ACCOUNTS)
        if r < 0.60 or not limits:
            # Buyers below the middle, sellers above, with overlap so ~a third cross.
            mid = 50
            price = (
                mid - 1 - int(abs(rng.gauss(0, 6))) + 3 if is_buy else mid + 1 + int(abs(rng.gauss(0, 6))) - 3
            )
            price = min(99, max(1, price))
            events.append(("L", sym, is_buy, price, rng.randint(1, 20), acct))
            limits.append(i)
        elif r < 0.85:
            # Mostly recent orders (which are likelier to be resting).
            events.append(("C", limits[-1 - min(len(limits) - 1, int(rng.expovariate(1 / 40)))]))
        else:
            events.append(("M", sym, is_buy, rng.randint(1, 20), acct))
    return events


# ---------------------------------------------------------------------------- engines


def run_ours(events: list[Event]) -> None:
    ex = Exchange()
    symbols = [f"SYM-{i}" for i in range(N_SYMBOLS)]
    accounts = [f"acct-{i}" for i in range(N_ACCOUNTS)]
    for s in symbols:
        ex.apply(CreateMarket(s, "binary", 0))
    for a in accounts:
        ex.apply(Deposit(a, 10**12, 0))
    apply = ex.apply
    oid_of: dict[int, int] = {}
    next_oid = 1
    for i, ev in enumerate(events):
        kind = ev[0]
        if kind == "L":
            _, sym, is_buy, price, qty, acct = ev
            oid_of[i] = next_oid
            apply(
                PlaceOrder(
                    next_oid, accounts[acct], symbols[sym], "buy" if is_buy else "sell", qty, i, price=price
                )
            )
            next_oid += 1
        elif kind == "C":
            target = ev[1]
            apply(CancelOrder(accounts[events[target][5]], oid_of[target], i))
        else:
            _, sym, is_buy, qty, acct = ev
            apply(
                PlaceOrder(
                    next_oid,
                    accounts[acct],
                    symbols[sym],
                    "buy" if is_buy else "sell",
                    qty,
                    i,
                    order_type="market",
                    time_in_force="IOC",
                )
            )
            next_oid += 1


def make_run_cython_orderbook() -> Callable[[list[Event]], None]:
    from cython_orderbook import Order, OrderBook, OrderSide  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def run(events: list[Event]) -> None:
        books = [OrderBook() for _ in range(N_SYMBOLS)]
        handles: dict[int, Any] = {}
        for i, ev in enumerate(events):
            kind = ev[0]
            if kind == "L":
                _, sym, is_buy, price, qty, _ = ev
                o = Order(OrderSide.BID if is_buy else OrderSide.ASK, qty, price)
                books[sym].add_limit_order(o)
                handles[i] = (sym, o.order_id)
            elif kind == "C":
                sym, order_id = handles[ev[1]]
                books[sym].cancel_order(order_id)
            else:
                _, sym, is_buy, qty, _ = ev
                books[sym].add_market_order(Order(OrderSide.BID if is_buy else OrderSide.ASK, qty, None))

    return run


def make_run_akhil4n_orderbook() -> Callable[[list[Event]], None]:
    import orderbook as ob  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def run(events: list[Event]) -> None:
        books = [ob.OrderBook() for _ in range(N_SYMBOLS)]
        handles: dict[int, Any] = {}
        for i, ev in enumerate(events):
            kind = ev[0]
            if kind == "L":
                _, sym, is_buy, price, qty, _ = ev
                o = ob.Order(ob.OrderSide.BID if is_buy else ob.OrderSide.ASK, price, qty)
                books[sym].add_limit_order(o)
                handles[i] = (sym, o.order_id)
            elif kind == "C":
                sym, order_id = handles[ev[1]]
                books[sym].cancel_order(order_id)
            else:
                _, sym, is_buy, qty, _ = ev
                books[sym].add_market_order(
                    ob.MarketOrder(ob.OrderSide.BID if is_buy else ob.OrderSide.ASK, qty)
                )

    return run


def make_run_pyorderbook() -> Callable[[list[Event]], None]:
    import pyorderbook as pob  # type: ignore[import-untyped,import-not-found,unused-ignore]

    logging.getLogger("pyorderbook.book").setLevel(logging.WARNING)

    def run(events: list[Event]) -> None:
        book = pob.Book()  # multi-symbol
        handles: dict[int, Any] = {}
        for i, ev in enumerate(events):
            kind = ev[0]
            if kind == "L":
                _, sym, is_buy, price, qty, _ = ev
                o = (pob.bid if is_buy else pob.ask)(str(sym), price, qty)
                book.match(o)
                handles[i] = o
            elif kind == "C":
                o = handles[ev[1]]
                if o.id in book.order_map:
                    book.cancel(o)
            else:
                # No market orders: an aggressive limit, then cancel whatever rests (IOC).
                _, sym, is_buy, qty, _ = ev
                o = (pob.bid if is_buy else pob.ask)(str(sym), 99 if is_buy else 1, qty)
                book.match(o)
                if o.id in book.order_map:
                    book.cancel(o)

    return run


def make_run_fastlob() -> Callable[[list[Event]], None]:
    import fastlob  # type: ignore[import-untyped,import-not-found,unused-ignore]

    logging.disable(logging.WARNING)  # it logs each order at INFO, each failed cancel at WARNING

    def run(events: list[Event]) -> None:
        books = [fastlob.Orderbook(f"LOB-{s}") for s in range(N_SYMBOLS)]
        for b in books:
            b._alive = True  # started without its background GTD thread (we send no GTD orders)
        handles: dict[int, Any] = {}
        bid, ask = fastlob.OrderSide.BID, fastlob.OrderSide.ASK
        for i, ev in enumerate(events):
            kind = ev[0]
            if kind == "L":
                _, sym, is_buy, price, qty, _ = ev
                res = books[sym].process(fastlob.OrderParams(bid if is_buy else ask, price, qty))
                handles[i] = (sym, res.orderid())
            elif kind == "C":
                sym, orderid = handles[ev[1]]
                # fastlob 0.0.24 raises KeyError cancelling into a price level it already dropped.
                with contextlib.suppress(KeyError):
                    books[sym].cancel(orderid)
            else:
                # A limit at the far price is treated as market; fastlob rests the remainder: cancel it.
                _, sym, is_buy, qty, _ = ev
                res = books[sym].process(
                    fastlob.OrderParams(bid if is_buy else ask, 99 if is_buy else 1, qty)
                )
                with contextlib.suppress(KeyError):
                    books[sym].cancel(res.orderid())

    return run


def make_run_liquibook() -> Callable[[list[Event]], None]:
    import liquibook  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def run(events: list[Event]) -> None:
        books = [liquibook.DepthOrderBook() for _ in range(N_SYMBOLS)]
        handles: dict[int, Any] = {}
        keep: list[Any] = []  # SWIG orders must outlive the C++ book's pointers to them
        ioc = liquibook.oc_immediate_or_cancel
        for i, ev in enumerate(events):
            kind = ev[0]
            if kind == "L":
                _, sym, is_buy, price, qty, _ = ev
                o = liquibook.SimpleOrder(is_buy, price, qty)
                books[sym].add(o, 0)
                handles[i] = (sym, o)
                keep.append(o)
            elif kind == "C":
                sym, o = handles[ev[1]]
                books[sym].cancel(o)
            else:
                _, sym, is_buy, qty, _ = ev
                o = liquibook.SimpleOrder(is_buy, 0, qty, 0, ioc)
                books[sym].add(o, 0)
                keep.append(o)

    return run


PEERS: list[tuple[str, str, Callable[[], Callable[[list[Event]], None]]]] = [
    ("cython-orderbook", "Cython, SortedDict levels", make_run_cython_orderbook),
    ("akhil4n-orderbook", "pure Python, SortedDict", make_run_akhil4n_orderbook),
    ("pyorderbook", "pure Python, Decimal/uuid; IOC emulated", make_run_pyorderbook),
    ("fastlob", "pure Python, Decimal; IOC emulated", make_run_fastlob),
    ("liquibook", "C++ (SWIG binding)", make_run_liquibook),
]


def timed(run: Callable[[list[Event]], None], events: list[Event]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    run(events)
    return time.perf_counter() - t0


def run_ours_mypyc(args: argparse.Namespace) -> tuple[float | None, str]:
    """Our engine built with mypyc, timed in a subprocess; (events/s or None, note)."""
    with contextlib.ExitStack() as stack:
        where = Path(args.mypyc) if args.mypyc else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        error = ensure_build(where.resolve())
        if error:
            return None, error
        cmd = [sys.executable, "-m", "bench.matching", "--ours-only", "--events", str(args.events)]
        cmd += ["--seed", str(args.seed), "--repeat", str(args.repeat)]
        ran = subprocess.run(cmd, cwd=where, env=build_env(where.resolve()), capture_output=True, text=True)
        if ran.returncode:
            return None, f"run failed: {ran.stderr.strip().splitlines()[-1:]}"
        result = json.loads(ran.stdout.strip().splitlines()[-1])
        if result["build"] != "mypyc":
            return None, f"subprocess imported {result['module']}, not the build"
        return float(result["events_per_s"]), "same engine, mypyc-compiled (subprocess)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per engine")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile our engine and print the top entries"
    )
    parser.add_argument(
        "--mypyc",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="also time our engine compiled with mypyc (built into DIR or a temporary directory)",
    )
    parser.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)  # for --mypyc
    args = parser.parse_args(argv)
    events = make_workload(args.seed, args.events)
    if args.ours_only:
        secs = min(timed(run_ours, events) for _ in range(args.repeat))
        result = {"events_per_s": len(events) / secs, "build": engine_build()}
        print(json.dumps({**result, "module": ENGINE_FILE}))
        return
    counts = {k: sum(1 for e in events if e[0] == k) for k in "LCM"}
    print(
        f"workload: {len(events)} events, seed {args.seed}, {N_SYMBOLS} symbols: "
        f"{counts['L']} limit, {counts['C']} cancel, {counts['M']} market"
    )
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run_ours, events)
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    rows: list[tuple[str, str, float | None, str]] = []
    ours_s = min(timed(run_ours, events) for _ in range(args.repeat))
    ours_rate = len(events) / ours_s
    rows.append(("everything-market engine", f"{engine_build()}, risk + STP + events", ours_rate, ""))
    mypyc_rate: float | None = None
    if args.mypyc is not None:
        mypyc_rate, note = run_ours_mypyc(args)
        rows.append(("everything-market (mypyc)", note, mypyc_rate, "" if mypyc_rate else note))
    for name, note, factory in PEERS:
        try:
            run = factory()
        except Exception as e:  # an uninstallable or broken peer is reported, not fatal
            rows.append((name, note, None, f"not run: {type(e).__name__}: {e}"))
            continue
        try:
            secs = min(timed(run, events) for _ in range(args.repeat))
        except Exception as e:
            rows.append((name, note, None, f"failed: {type(e).__name__}: {e}"))
            continue
        rows.append((name, note, len(events) / secs, ""))
    mypyc_col = f" {'mypyc / it':>10}" if mypyc_rate else ""
    print(f"{'engine':<26} {'events/s':>12} {'ours / it':>10}{mypyc_col}  notes")
    for name, note, rate, err in rows:
        if rate is None:
            print(f"{name:<26} {'-':>12} {'-':>10}{' ' * len(mypyc_col)}  {note}; {err}")
        else:
            extra = f" {mypyc_rate / rate:>9.2f}x" if mypyc_rate else ""
            print(f"{name:<26} {rate:>12,.0f} {ours_rate / rate:>9.2f}x{extra}  {note}")


if __name__ == "__main__":
    main()
