"""Durable order entry through `OrderbookHost.submit`, in process, beside the pure engine.

Question answered: how much of the engine's in-memory rate survives once every command goes
through the host's real path (apply, WAL append, sequencing on realtime channels, group-commit
fsync under `fsync=always`, publish) with many commands in flight at once — and what the disk's
own fsync costs, measured in the same directory in the same run.

One seeded workload (limits, cancels, market orders across 10 binary symbols, funded
accounts) is replayed three ways: `Exchange.apply` in a loop (in-memory), then the host with
K concurrent `submit` calls for each K. Command construction is inside every timing. After
each host row the host's engine state hash must equal the in-memory engine's after the same
prefix (same commands, same order), so the rows measure the same work.

Full run:  `.venv/bin/python -m bench.host_durable`
Quick run: `.venv/bin/python -m bench.host_durable --quick`
Profile:   `.venv/bin/python -m bench.host_durable --profile`   (cProfile of the widest row)
Compiled:  `.venv/bin/python -m bench.host_durable --mypyc DIR`  (engine built with mypyc into DIR)
Options:   `--seconds S` per host row (default 4; quick 1), `--inflight 1,16,64,256`,
           `--dir PATH` (filesystem to test; default the temp dir), `--seed N`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench import compiled
from emlib.blobstore.local import LocalBlobStore
from orderbook_host import host as host_module
from orderbook_host.engine import commands as cmds
from orderbook_host.engine.exchange import Exchange
from orderbook_host.host import OrderbookHost
from orderbook_host.realtime import RealtimeHub
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import FsyncPolicy, WriteAheadLog, encode_record

SYMBOLS = tuple(f"BENCH-{i}" for i in range(10))
ACCOUNTS_N = 200
DEPOSIT_MINOR = 10**12
TS_BASE_MS = 1_800_000_000_000
SHARD = "bench-host"
LIMIT, MARKET, CANCEL = "limit", "market", "cancel"


@dataclass(frozen=True, slots=True)
class Op:
    """One workload step. `target` (cancels) is the index of the earlier op whose order to cancel."""

    kind: str
    account: str
    symbol: str
    side: str
    price: int
    quantity: int
    target: int = -1


def setup_commands(accounts_n: int = ACCOUNTS_N) -> list[cmds.Command]:
    out: list[cmds.Command] = [cmds.CreateMarket(s, "binary", TS_BASE_MS) for s in SYMBOLS]
    out += [cmds.Deposit(f"acct-{i}", DEPOSIT_MINOR, TS_BASE_MS) for i in range(accounts_n)]
    return out


def make_ops(n: int, seed: int, accounts_n: int = ACCOUNTS_N) -> list[Op]:
    """65 % limit (around mid 50, some crossing), 25 % cancel of a recent limit, 10 % market."""
    rng = random.Random(seed)
    ops: list[Op] = []
    limits: list[int] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.25 and limits:
            target = limits[-1 - rng.randrange(min(len(limits), 500))]
            t = ops[target]
            ops.append(Op(CANCEL, t.account, t.symbol, t.side, 0, 0, target))
            continue
        account = f"acct-{rng.randrange(accounts_n)}"
        symbol = SYMBOLS[rng.randrange(len(SYMBOLS))]
        side = "buy" if rng.random() < 0.5 else "sell"
        quantity = rng.randint(1, 20)
        if roll < 0.35:
            ops.append(Op(MARKET, account, symbol, side, 0, quantity))
            continue
        offset = rng.randint(-3, 12)  # mostly passive, sometimes crossing
        price = 50 - offset if side == "buy" else 50 + offset
        ops.append(Op(LIMIT, account, symbol, side, price, quantity))
        limits.append(i)
    return ops


def to_command(op: Op, index: int, next_order_id: int, ids: list[int]) -> cmds.Command:
    """The command for op `index`; `ids[index]` records the server order id it was given."""
    ts_ms = TS_BASE_MS + index
    if op.kind == CANCEL:
        return cmds.CancelOrder(op.account, ids[op.target], ts_ms)
    ids[index] = next_order_id
    if op.kind == MARKET:
        return cmds.PlaceOrder(
            next_order_id, op.account, op.symbol, op.side, op.quantity, ts_ms, order_type="market"
        )
    return cmds.PlaceOrder(
        next_order_id,
        op.account,
        op.symbol,
        op.side,
        op.quantity,
        ts_ms,
        price=op.price,
        client_order_id=f"c{index}",
    )


def percentile_ms(samples_s: list[float], q: float) -> float:
    if not samples_s:
        return float("nan")
    ordered = sorted(samples_s)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# ---------------------------------------------------------------------------------- measurements


def raw_fsync(directory: Path, seconds: float) -> tuple[float, float, float, int]:
    """The disk alone: os.write of a ~100 B framed record + fdatasync. (p50_ms, p99_ms, max_ms, n)."""
    path = directory / "raw-fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = encode_record(1, b"r" * 84)  # 100 bytes framed
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline or len(samples) < 50:
            t0 = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return percentile_ms(samples, 0.5), percentile_ms(samples, 0.99), max(samples) * 1000, len(samples)


def in_memory(setup: list[cmds.Command], ops: list[Op]) -> tuple[float, Exchange]:
    """Seconds to build and apply `ops` on a bare Exchange (setup excluded), and the exchange."""
    seconds, _, ex = in_memory_timed(setup, ops)
    return seconds, ex


def in_memory_timed(setup: list[cmds.Command], ops: list[Op]) -> tuple[float, float, Exchange]:
    """`in_memory`, with this thread's CPU seconds beside the wall-clock ones."""
    ex = Exchange()
    for cmd in setup:
        assert ex.apply(cmd).code is None
    ids = [0] * len(ops)
    apply = ex.apply
    started, cpu_started = time.perf_counter(), time.thread_time()
    for index, op in enumerate(ops):
        apply(to_command(op, index, ex.next_order_id, ids))
    return time.perf_counter() - started, time.thread_time() - cpu_started, ex


def open_host(directory: Path, policy: FsyncPolicy) -> OrderbookHost:
    """The wiring of `orderbook_host.app.build_host`, on a local folder."""
    wal = WriteAheadLog.open(directory / "wal", fsync_policy=policy)
    snapshots = SnapshotStore(LocalBlobStore(directory / "objects"))
    host = OrderbookHost(shard_id=SHARD, wal=wal, snapshots=snapshots, hub=RealtimeHub(SHARD, 10_000))
    host.recover()
    host_module.tune_gc_for_serving()  # as `python -m orderbook_host` does after recovery
    return host


@dataclass
class HostRun:
    done: int
    elapsed_s: float
    latencies_s: list[float]
    wal_records: int
    fsyncs: int
    state_hash: str
    loop_cpu_s: float = 0.0  # the event-loop thread's CPU time
    other_cpu_s: float = 0.0  # every other thread's (the WAL flusher: writes, fsync calls)


async def drive_host(
    host: OrderbookHost, setup: list[cmds.Command], ops: list[Op], inflight: int, seconds: float
) -> HostRun:
    """`inflight` tasks take ops in order and await `submit` until time is up or ops run out.

    Taking the next op and applying it happen with no await in between, so the apply order
    is the op order whatever the interleaving of acknowledgements.
    """
    for cmd in setup:
        assert (await host.submit(cmd)).outcome.code is None
    fsyncs_before = host.wal.metrics.fsync_count
    records_before = host.wal.metrics.records
    ids = [0] * len(ops)
    latencies: list[float] = []
    cursor = iter(range(len(ops)))
    deadline = time.perf_counter() + seconds
    exchange = host.exchange

    async def worker() -> None:
        for index in cursor:
            t0 = time.perf_counter()
            await host.submit(to_command(ops[index], index, exchange.next_order_id, ids))
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            if t1 > deadline:
                return

    started, loop_cpu, all_cpu = time.perf_counter(), time.thread_time(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.perf_counter() - started
    loop_cpu = time.thread_time() - loop_cpu
    all_cpu = time.process_time() - all_cpu
    return HostRun(
        done=len(latencies),
        elapsed_s=elapsed,
        latencies_s=latencies,
        wal_records=host.wal.metrics.records - records_before,
        fsyncs=host.wal.metrics.fsync_count - fsyncs_before,
        state_hash="",  # filled in outside any profile
        loop_cpu_s=loop_cpu,
        other_cpu_s=max(0.0, all_cpu - loop_cpu),
    )


def run_host(
    base: Path,
    label: str,
    policy: FsyncPolicy,
    setup: list[cmds.Command],
    ops: list[Op],
    inflight: int,
    seconds: float,
    loop: str = "uvloop",
    profile: cProfile.Profile | None = None,
    without_wal: bool = False,
) -> HostRun:
    directory = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))
    host = open_host(directory, policy)
    if without_wal:
        skip_the_wal(host.wal)
    try:
        if profile is not None:
            profile.enable()
        try:
            coro = drive_host(host, setup, ops, inflight, seconds)
            run = uvloop.run(coro) if loop == "uvloop" else asyncio.run(coro)
        finally:
            if profile is not None:
                profile.disable()
        run.state_hash = host.exchange.state_hash()
        return run
    finally:
        host.wal.close()
        shutil.rmtree(directory, ignore_errors=True)


def skip_the_wal(wal: WriteAheadLog) -> None:
    """What-if only (never in the product): the host's own path with durability taken out —
    records are numbered but neither written nor synced — so the table can show what the WAL
    and fsync cost on top of the host's other work (routing, sequencing, asyncio)."""

    def numbered_only(payload: bytes) -> int:
        wal._last_seq += 1
        return wal._last_seq

    wal.append_deferred = numbered_only  # type: ignore[method-assign]
    wal.durable_future = lambda seq: None  # type: ignore[method-assign]


# Where a submit's time goes: cumulative time of the host's steps (they do not nest in each other).
BREAKDOWN = (
    ("Exchange.apply (engine)", "engine/exchange.py", "apply"),
    ("encode_command (orjson)", "engine/commands.py", "encode_command"),
    ("WriteAheadLog.append_deferred (queue)", "orderbook_host/wal.py", "append_deferred"),
    ("channels_of (routing)", "orderbook_host/host.py", "channels_of"),
    ("RealtimeHub.append (sequence numbers)", "orderbook_host/realtime.py", "append"),
    ("OrderbookHost._commit (group commit)", "orderbook_host/host.py", "_commit"),
    ("OrderbookHost._committed (publish, wake)", "orderbook_host/host.py", "_committed"),
    ("OrderbookHost.submit (total)", "orderbook_host/host.py", "submit"),
)


def print_breakdown(profile: cProfile.Profile) -> None:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total_s = sum(tt for (_, _, tt, _, _) in stats.values())
    print(f"\nwhere the event-loop thread's time goes (cProfile, {total_s:.2f} s profiled):")
    for label, file_suffix, name in BREAKDOWN:
        cum = sum(
            ct
            for (file, _, func), (_, _, _, ct, _) in stats.items()
            if func == name and file.endswith(file_suffix)
        )
        print(f"  {label:<36}{cum:>8.3f} s {cum / total_s:>7.1%}")


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.host_durable", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rows (1 s), fewer ops")
    parser.add_argument("--profile", action="store_true", help="cProfile the widest fsync=always row")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (the host runs uvloop)"
    )
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--inflight", default="1,16,64,256")
    parser.add_argument("--dir", type=Path, default=None, help="where the WALs go (default: temp dir)")
    parser.add_argument("--seed", type=int, default=7)
    compiled.add_mypyc_option(parser)
    args = parser.parse_args(argv)
    compiled.rerun_if_asked(args, "bench.host_durable")
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 4.0)
    widths = [int(x) for x in args.inflight.split(",")]
    ops_n = 60_000 if args.quick else 400_000

    base = Path(tempfile.mkdtemp(prefix="bench-host-durable-", dir=args.dir))
    try:
        setup = setup_commands()
        ops = make_ops(ops_n, args.seed)
        fs_p50, fs_p99, fs_max, fs_n = raw_fsync(base, min(seconds, 2.0))
        mem_s, _ = in_memory(setup, ops)
        mem_rate = len(ops) / mem_s
        print(
            f"workload: {len(ops):,} ops (65% limit, 25% cancel, 10% market), {len(SYMBOLS)} symbols, "
            f"{ACCOUNTS_N} accounts, seed {args.seed}; dir {base}"
        )
        print(
            f"disk: os.write(100 B) + fdatasync  p50 {fs_p50:.3f} ms  p99 {fs_p99:.3f} ms  "
            f"max {fs_max:.3f} ms  ({fs_n} samples)"
        )
        print(
            f"in-memory Exchange.apply over all ops: {mem_rate:,.0f} ops/s; engine {compiled.engine_build()}"
        )
        print(f"event loop: {args.loop}\n")

        header = (
            f"{'path':<28}{'in flight':>10}{'ops':>10}{'ops/s':>12}{'in-mem ops/s':>14}{'ratio':>8}"
            f"{'p50 ms':>9}{'p99 ms':>9}{'rec/fsync':>10}{'cpu us/op':>10}{'mem cpu':>8}{'cpu ratio':>10}"
            f"{'hash':>6}"
        )
        print(header)
        print("-" * len(header))
        widest = max(widths)
        rows: list[tuple[str, FsyncPolicy, int, bool]] = [
            ("host, fsync=always", "always", k, False) for k in widths
        ]
        rows.append(("host, fsync=every_n (no wait)", "every_n", widest, False))
        rows.append(("what-if: host without WAL", "always", widest, True))
        profile = cProfile.Profile() if args.profile else None
        for label, policy, k, without_wal in rows:
            use_profile = profile if (policy == "always" and k == widest) else None
            if without_wal:
                use_profile = None
            run = run_host(
                base, f"{policy}-{k}", policy, setup, ops, k, seconds, args.loop, use_profile, without_wal
            )
            # the same prefix, in memory: same state, and the rate on exactly that work
            prefix_s, prefix_cpu_s, ex = in_memory_timed(setup, ops[: run.done])
            prefix_rate = run.done / prefix_s
            host_cpu_us = (run.loop_cpu_s + run.other_cpu_s) / run.done * 1e6
            mem_cpu_us = prefix_cpu_s / run.done * 1e6
            rate = run.done / run.elapsed_s
            same = "ok" if ex.state_hash() == run.state_hash else "DIFF"
            per_fsync = run.wal_records / run.fsyncs if run.fsyncs else float("nan")
            print(
                f"{label:<28}{k:>10}{run.done:>10,}{rate:>12,.0f}{prefix_rate:>14,.0f}"
                f"{rate / prefix_rate:>8.1%}{percentile_ms(run.latencies_s, 0.5):>9.2f}"
                f"{percentile_ms(run.latencies_s, 0.99):>9.2f}{per_fsync:>10.1f}{host_cpu_us:>10.2f}"
                f"{mem_cpu_us:>8.2f}{mem_cpu_us / host_cpu_us:>10.1%}{same:>6}"
            )
        print("\nratio = host ops/s / in-memory ops/s on the same prefix (target >= 50 %).")
        print(
            "cpu us/op = the host process's CPU per op (all threads: loop + WAL flusher); mem cpu = "
            "the in-memory engine's; cpu ratio = mem cpu / cpu us/op (steadier than wall time when busy)."
        )
        print(
            "ops include refusals (e.g. cancels of filled orders), which the host answers without "
            "a WAL record; rec/fsync = WAL records per data fsync (group commit)."
        )
        print(
            "what-if (bench only): the same host path with WAL writes and fsyncs taken out; fsync=always "
            "at the same width over it = what durability costs on top of the host's own work."
        )
        if profile is not None:
            print_breakdown(profile)
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            print(f"\ncProfile of fsync=always, {max(widths)} in flight (event-loop thread, by own time):")
            print(out.getvalue())
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
