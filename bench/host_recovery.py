"""Host recovery time after a long WAL tail, start-to-ready, and memory per resting order.

Questions answered:
1. How long `OrderbookHost.recover()` takes for 1,000,000 WAL records after the newest
   snapshot (target <= 5 s), in records/s, split into reading the WAL (framing + CRC),
   decoding commands, the engine's apply, and the host's own work (counting sequence numbers
   per channel, rebuilding the journal and the market replay buffers);
2. how long `python -m orderbook_host` takes from spawn to `/ready` 200 on that data;
3. the resident memory a host holds per resting order at 1,000,000 resting orders, beside the
   engine alone (RSS delta in a fresh child process, after gc).

The WAL is what a host would have written: a realistic stream (deposits, limit orders,
cancels, a few market orders over 10 binary symbols) is run through an in-memory Exchange and
only accepted commands are encoded with `encode_command` and appended to a `WriteAheadLog`
directly (fsync_policy every_n, so generation is quick). A snapshot is taken after the set-up
(markets + deposits), so recovery replays exactly the generated records.

Full run:  `.venv/bin/python -m bench.host_recovery`            (1,000,000 records / resting orders)
Quick run: `.venv/bin/python -m bench.host_recovery --quick`    (100,000)
Compiled:  `.venv/bin/python -m bench.host_recovery --mypyc DIR` (engine built with mypyc into DIR)
Options:   `--records N`, `--resting N`, `--accounts N` (default 1,000), `--dir PATH`, `--seed N`,
           `--skip-memory`, `--skip-ready`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import compiled
from bench.host_durable import SYMBOLS, TS_BASE_MS
from bench.host_http import start_server, stop_server
from emlib.blobstore.local import LocalBlobStore
from orderbook_host.engine import commands as cmds
from orderbook_host.engine.exchange import Exchange
from orderbook_host.host import OrderbookHost
from orderbook_host.realtime import RealtimeHub
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import WriteAheadLog

SHARD = "orderbook-host-1"  # the default ORDERBOOK_SHARD_ID, so `python -m orderbook_host` finds it
DEPOSIT_MINOR = 10**12
REPLAY_BUFFER_SIZE = 10_000  # the default REPLAY_BUFFER_SIZE


def wal_dir(data_dir: Path) -> Path:
    return data_dir / "wal" / SHARD  # Settings.orderbook_wal_dir


def open_host(data_dir: Path) -> OrderbookHost:
    """The wiring of `orderbook_host.app.build_host` for this DATA_DIR (without recover())."""
    wal = WriteAheadLog.open(wal_dir(data_dir), fsync_policy="every_n")
    snapshots = SnapshotStore(LocalBlobStore(data_dir / "objects"))
    return OrderbookHost(
        shard_id=SHARD, wal=wal, snapshots=snapshots, hub=RealtimeHub(SHARD, REPLAY_BUFFER_SIZE)
    )


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------------- WAL generation


def setup_commands(accounts: int) -> list[cmds.Command]:
    out: list[cmds.Command] = [cmds.CreateMarket(s, "binary", TS_BASE_MS) for s in SYMBOLS]
    out += [cmds.Deposit(f"acct-{i}", DEPOSIT_MINOR, TS_BASE_MS) for i in range(accounts)]
    return out


def mixed_stream(ex: Exchange, n: int, accounts: int, seed: int) -> Iterator[cmds.Command]:
    """Accepted commands only: 5 % deposits, 65 % limits, 25 % cancels, 5 % market orders."""
    rng = random.Random(seed)
    resting: list[tuple[str, int]] = []
    produced = 0
    index = 0
    while produced < n:
        index += 1
        ts_ms = TS_BASE_MS + index
        roll = rng.random()
        account = f"acct-{rng.randrange(accounts)}"
        cmd: cmds.Command
        if roll < 0.05:
            cmd = cmds.Deposit(account, rng.randint(1, 10_000), ts_ms)
        elif roll < 0.30 and resting:
            owner, oid = resting.pop(rng.randrange(len(resting)))
            cmd = cmds.CancelOrder(owner, oid, ts_ms)
        else:
            side = "buy" if rng.random() < 0.5 else "sell"
            symbol = SYMBOLS[rng.randrange(len(SYMBOLS))]
            quantity = rng.randint(1, 20)
            if roll < 0.35:
                cmd = cmds.PlaceOrder(
                    ex.next_order_id, account, symbol, side, quantity, ts_ms, order_type="market"
                )
            else:
                offset = rng.randint(-3, 12)
                price = 50 - offset if side == "buy" else 50 + offset
                cmd = cmds.PlaceOrder(
                    ex.next_order_id, account, symbol, side, quantity, ts_ms, price=price,
                    client_order_id=f"c{index}",
                )  # fmt: skip
        outcome = ex.apply(cmd)
        if outcome.code is not None:
            continue  # the host logs only accepted commands
        if isinstance(cmd, cmds.PlaceOrder) and outcome.ack and outcome.ack.remaining_quantity:
            resting.append((cmd.account, cmd.server_order_id))
        produced += 1
        yield cmd


def resting_stream(
    ex: Exchange, n: int, accounts: int, seed: int, client_ids: bool = True
) -> Iterator[cmds.Command]:
    """`n` limit orders that never cross (buys 1..49, sells 51..99): all of them rest; each with
    a client_order_id unless `client_ids` is False (the engine keeps one per account per id)."""
    rng = random.Random(seed)
    for index in range(1, n + 1):
        side = "buy" if index % 2 else "sell"
        price = rng.randint(1, 49) if side == "buy" else rng.randint(51, 99)
        cmd = cmds.PlaceOrder(
            ex.next_order_id, f"acct-{rng.randrange(accounts)}", SYMBOLS[index % len(SYMBOLS)], side,
            rng.randint(1, 20), TS_BASE_MS + index, price=price,
            client_order_id=f"r{index}" if client_ids else None,
        )  # fmt: skip
        assert ex.apply(cmd).code is None
        yield cmd


def build_data_dir(
    data_dir: Path, kind: str, n: int, accounts: int, seed: int, client_ids: bool = True
) -> float:
    """Set-up records, a snapshot after them, then `n` generated records. Returns seconds taken."""
    started = time.perf_counter()
    setup = setup_commands(accounts)
    with WriteAheadLog.open(wal_dir(data_dir), fsync_policy="every_n", every_n=4096) as wal:
        for cmd in setup:
            wal.append(cmds.encode_command(cmd))
    host = open_host(data_dir)
    host.recover()
    assert asyncio.run(host.take_snapshot()) == len(setup)
    ex = host.exchange
    stream = (
        mixed_stream(ex, n, accounts, seed)
        if kind == "mixed"
        else resting_stream(ex, n, accounts, seed, client_ids)
    )
    wal = host.wal
    encode = cmds.encode_command
    for cmd in stream:
        wal.append(encode(cmd))
    wal.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------- measurements


def measure_recovery(data_dir: Path) -> dict[str, float]:
    """Each phase on its own pass over the same data, then the real recover()."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    host = open_host(data_dir)
    out["wal_open_s"] = time.perf_counter() - t0  # lock + scan/CRC of the active segment's tail
    latest = host.snapshots.latest_valid(SHARD)
    assert latest is not None
    snap_seq = latest[0]
    out["records"] = host.wal.last_seq - snap_seq

    gc.disable()  # as recover() runs: each phase alone, without collections over what it keeps
    try:
        _measure_phases(host, latest[1], snap_seq, out)
    finally:
        gc.enable()
    host.wal.close()
    gc.collect()

    host = open_host(data_dir)
    t0 = time.perf_counter()
    host.recover()
    out["recover_s"] = time.perf_counter() - t0
    out["state_hash_s"] = _timed(host.state_hash)
    host.wal.close()
    return out


def _measure_phases(host: OrderbookHost, snapshot: bytes, snap_seq: int, out: dict[str, float]) -> None:
    t0 = time.perf_counter()
    for _ in host.wal.replay(snap_seq + 1):
        pass
    out["read_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    decoded = [cmds.decode_command(payload) for _, payload in host.wal.replay(snap_seq + 1)]
    out["read_decode_s"] = time.perf_counter() - t0

    host._restore(snapshot)  # the engine as recover() starts from it
    apply = host.exchange.apply
    t0 = time.perf_counter()
    for cmd in decoded:
        apply(cmd)
    out["apply_s"] = time.perf_counter() - t0
    del decoded


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def memory_child(data_dir: Path, what: str) -> None:
    """Runs in a fresh process: RSS before and after loading the resting orders, as JSON."""
    host = open_host(data_dir)
    latest = host.snapshots.latest_valid(SHARD)
    assert latest is not None
    gc.collect()
    before = rss_bytes()
    if what == "host":
        host.recover()
        resting = len(host.exchange.orders)
        envelopes = sum(len(log.buffer) for log in host.hub.channels.values())
        channels = len(host.hub.channels)
    else:  # the engine alone: same records, straight into Exchange.apply
        host._restore(latest[1])
        ex = host.exchange
        for _, payload in host.wal.replay(latest[0] + 1):
            ex.apply(cmds.decode_command(payload))
        resting = len(ex.orders)
        envelopes = channels = 0
    gc.collect()
    after = rss_bytes()
    json.dump(
        {"rss_delta": after - before, "resting": resting, "envelopes": envelopes, "channels": channels},
        sys.stdout,
    )


def measure_memory(data_dir: Path, what: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.host_recovery", "--memory-child", what, "--dir", str(data_dir)],
        check=True,
        capture_output=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.host_recovery", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--resting", type=int, default=None)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-ready", action="store_true")
    parser.add_argument("--memory-child", choices=("host", "engine"), help=argparse.SUPPRESS)
    compiled.add_mypyc_option(parser)
    args = parser.parse_args(argv)
    compiled.rerun_if_asked(args, "bench.host_recovery")
    if args.memory_child:
        memory_child(args.dir, args.memory_child)
        return
    default_n = 100_000 if args.quick else 1_000_000
    records = args.records or default_n
    resting = args.resting or default_n

    base = Path(tempfile.mkdtemp(prefix="bench-host-recovery-", dir=args.dir))
    print(f"engine: {compiled.engine_build()}")
    try:
        mixed_dir = base / "mixed"
        gen_s = build_data_dir(mixed_dir, "mixed", records, args.accounts, args.seed)
        wal_bytes = sum(p.stat().st_size for p in wal_dir(mixed_dir).glob("*.wal"))
        print(
            f"WAL: {records:,} accepted commands after the snapshot (5% deposit, 65% limit, 25% cancel, "
            f"5% market; {args.accounts:,} accounts, {len(SYMBOLS)} symbols), {wal_bytes / 1e6:.0f} MB, "
            f"generated in {gen_s:.1f} s\n"
        )
        r = measure_recovery(mixed_dir)
        n = r["records"]
        decode_s = r["read_decode_s"] - r["read_s"]
        host_s = r["recover_s"] - r["read_decode_s"] - r["apply_s"]
        header = f"{'phase':<46}{'seconds':>9}{'records/s':>13}{'share':>8}"
        print(header)
        print("-" * len(header))
        # (label, seconds, part of recover()?, a per-record phase?)
        for label, seconds, inside, per_record in (
            ("WAL open (lock, scan + CRC of the active tail)", r["wal_open_s"], False, False),
            ("WAL read (framing + CRC), alone", r["read_s"], True, True),
            ("decode_command (JSON -> command)", decode_s, True, True),
            ("Exchange.apply (engine)", r["apply_s"], True, True),
            ("host: count channels, rebuild journal+buffers", host_s, True, True),
            ("state_hash() (not part of recover())", r["state_hash_s"], False, False),
        ):
            rate = f"{n / seconds:>13,.0f}" if per_record and seconds > 0 else f"{'-':>13}"
            share = f"{seconds / r['recover_s']:>8.0%}" if inside else f"{'-':>8}"
            print(f"{label:<46}{seconds:>9.2f}{rate}{share}")
        print(
            f"{'OrderbookHost.recover() total':<46}{r['recover_s']:>9.2f}{n / r['recover_s']:>13,.0f}"
            f"{'':>8}   -> 1,000,000 records: {r['recover_s'] * 1e6 / n:.1f} s (target <= 5 s)"
        )

        if not args.skip_ready:
            server = start_server(mixed_dir, ready_timeout_s=1800)
            stop_server(server)
            print(f"\n`python -m orderbook_host` spawn -> /ready 200 on this data: {server.ready_s:.2f} s")

        if not args.skip_memory:
            shutil.rmtree(mixed_dir, ignore_errors=True)
            for client_ids in (True, False):
                rest_dir = base / f"resting-{'ids' if client_ids else 'no-ids'}"
                gen_s = build_data_dir(rest_dir, "resting", resting, args.accounts, args.seed, client_ids)
                host_mem = measure_memory(rest_dir, "host")
                engine_mem = measure_memory(rest_dir, "engine")
                shutil.rmtree(rest_dir, ignore_errors=True)
                print(
                    f"\nmemory at {resting:,} resting orders, {'each with' if client_ids else 'without'} a "
                    f"client_order_id ({args.accounts:,} accounts; RSS delta in a fresh process, after gc; "
                    f"WAL generated in {gen_s:.1f} s):"
                )
                header = f"{'what':<52}{'resting':>10}{'RSS delta MB':>14}{'B/order':>9}"
                print(header)
                print("-" * len(header))
                for label, m in (("engine alone (Exchange.apply)", engine_mem),
                                 ("host (recover: engine + realtime replay buffers)", host_mem)):  # fmt: skip
                    per = m["rss_delta"] / max(1, m["resting"])
                    print(f"{label:<52}{m['resting']:>10,}{m['rss_delta'] / 1e6:>14,.0f}{per:>9,.0f}")
            print(
                f"host replay buffers: {host_mem['envelopes']:,} messages retained over "
                f"{host_mem['channels']:,} channels (REPLAY_BUFFER_SIZE={REPLAY_BUFFER_SIZE:,} per channel); "
                "target <= 300 B/order."
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
