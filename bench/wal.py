"""WAL throughput, group commit and recovery time, beside the disk's own fsync cost.

Run: `.venv/bin/python -m bench.wal` (BENCH_WAL_DIR picks the filesystem, default the temp dir;
BENCH_WAL_SECONDS the time per row, default 2; BENCH_WAL_RECOVERY_RECORDS default 1,000,000).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from orderbook_host.wal import SEGMENT_BYTES_DEFAULT, WriteAheadLog, encode_record, segment_name

PAYLOAD = b"o" * 100  # about one order command
SECONDS = float(os.environ.get("BENCH_WAL_SECONDS", "2"))
RECOVERY_RECORDS = int(os.environ.get("BENCH_WAL_RECOVERY_RECORDS", "1000000"))


@dataclass
class Row:
    name: str
    ops_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    fsyncs: int | None = None
    records: int | None = None


def _pct(latencies_s: list[float], q: float) -> float:
    ordered = sorted(latencies_s)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def raw_fsync(directory: Path) -> Row:
    path = directory / "raw.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    latencies: list[float] = []
    record = encode_record(1, PAYLOAD)
    deadline = time.perf_counter() + SECONDS
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        os.write(fd, record)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    os.close(fd)
    path.unlink()
    return Row(
        "disk: os.write + fdatasync, 1 thread",
        len(latencies) / elapsed,
        _pct(latencies, 0.5),
        _pct(latencies, 0.99),
    )


def wal_threads(directory: Path, threads_n: int) -> Row:
    log = WriteAheadLog.open(directory / f"always-{threads_n}", fsync_policy="always")
    latencies: list[list[float]] = [[] for _ in range(threads_n)]
    stop = threading.Event()
    go = threading.Barrier(threads_n + 1)

    def worker(mine: list[float]) -> None:
        go.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            log.wait_durable(log.append(PAYLOAD))
            mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(latencies[i],)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    go.wait()
    started = time.perf_counter()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    log.close()
    merged = [value for per_thread in latencies for value in per_thread]
    return Row(
        f"wal always, {threads_n} threads",
        len(merged) / elapsed,
        _pct(merged, 0.5),
        _pct(merged, 0.99),
        log.metrics.fsync_count,
        log.metrics.records,
    )


def wal_async(directory: Path, in_flight: int) -> Row:
    log = WriteAheadLog.open(directory / f"async-{in_flight}", fsync_policy="always")
    latencies: list[float] = []

    async def client(deadline: float) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await log.wait_durable_async(log.append(PAYLOAD))
            latencies.append(time.perf_counter() - t0)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(started + SECONDS) for _ in range(in_flight)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    log.close()
    return Row(
        f"wal always, asyncio {in_flight} in flight",
        len(latencies) / elapsed,
        _pct(latencies, 0.5),
        _pct(latencies, 0.99),
        log.metrics.fsync_count,
        log.metrics.records,
    )


def wal_background(directory: Path, name: str, **options: object) -> Row:
    log = WriteAheadLog.open(directory / name, **options)  # type: ignore[arg-type]
    count = 0
    started = time.perf_counter()
    deadline = started + SECONDS
    while time.perf_counter() < deadline:
        for _ in range(1000):
            log.wait_durable(log.append(PAYLOAD))  # returns at once under these policies
        count += 1000
    elapsed = time.perf_counter() - started
    log.close()
    return Row(
        f"wal {name}, 1 thread", count / elapsed, None, None, log.metrics.fsync_count, log.metrics.records
    )


def in_memory() -> Row:
    buffer = bytearray()
    count = 0
    started = time.perf_counter()
    deadline = started + SECONDS
    while time.perf_counter() < deadline:
        for seq in range(count + 1, count + 1001):
            buffer += encode_record(seq, PAYLOAD)
        count += 1000
        if len(buffer) > 64 << 20:
            buffer.clear()
    return Row("framing + crc into memory (no I/O)", count / (time.perf_counter() - started))


def recovery(directory: Path) -> tuple[float, float, int]:
    """Write RECOVERY_RECORDS records as the WAL would, then time open() and a full replay."""
    wal_dir = directory / "recovery"
    wal_dir.mkdir()
    chunk = bytearray()
    first = 1
    for seq in range(1, RECOVERY_RECORDS + 1):
        record = encode_record(seq, PAYLOAD)
        if len(chunk) + len(record) > SEGMENT_BYTES_DEFAULT:
            (wal_dir / segment_name(first)).write_bytes(chunk)
            chunk, first = bytearray(), seq
        chunk += record
    (wal_dir / segment_name(first)).write_bytes(chunk)
    os.sync()
    started = time.perf_counter()
    log = WriteAheadLog.open(wal_dir)
    opened = time.perf_counter()
    count = 0
    payload_bytes = 0
    for _, payload in log.replay():
        count += 1
        payload_bytes += len(payload)
    replayed = time.perf_counter()
    assert count == RECOVERY_RECORDS and log.last_seq == RECOVERY_RECORDS
    log.close()
    return opened - started, replayed - opened, count


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-wal-", dir=os.environ.get("BENCH_WAL_DIR")))
    try:
        rows = [raw_fsync(base)]
        rows += [wal_threads(base, threads_n) for threads_n in (1, 8, 64, 256)]
        rows.append(wal_async(base, 256))
        rows.append(wal_background(base, "every_n=64", fsync_policy="every_n", every_n=64))
        rows.append(wal_background(base, "interval_ms=5", fsync_policy="interval_ms", interval_ms=5))
        rows.append(wal_background(base, "no fsync until close", fsync_policy="every_n", every_n=1 << 30))
        rows.append(in_memory())
        open_s, replay_s, count = recovery(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    baseline = rows[1].ops_per_s
    print(
        f"WAL bench: {len(PAYLOAD)}-byte payloads, {SECONDS:g} s per row, "
        f"dir {base.parent}, {os.cpu_count()} cores"
    )
    header = (
        f"{'scenario':<40} {'ops/s':>10} {'x always-1':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'fsyncs':>8} {'rec/fsync':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        p50 = f"{row.p50_ms:8.3f}" if row.p50_ms is not None else f"{'':>8}"
        p99 = f"{row.p99_ms:8.3f}" if row.p99_ms is not None else f"{'':>8}"
        fsyncs = f"{row.fsyncs:8d}" if row.fsyncs is not None else f"{'':>8}"
        per_fsync = (
            f"{row.records / row.fsyncs:9.1f}" if row.fsyncs and row.records is not None else f"{'':>9}"
        )
        print(
            f"{row.name:<40} {row.ops_per_s:10,.0f} {row.ops_per_s / baseline:10.2f} "
            f"{p50} {p99} {fsyncs} {per_fsync}"
        )
    total = open_s + replay_s
    print()
    print(
        f"recovery of {count:,} records: open (validate last segment) {open_s:.2f} s + "
        f"replay (read + CRC all) {replay_s:.2f} s = {total:.2f} s "
        f"({count / total:,.0f} records/s; target <= 5 s: {'ok' if total <= 5 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
