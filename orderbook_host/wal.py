"""Write-ahead log for one orderbook shard: what was acknowledged survives a crash.

The host appends every accepted command here before it answers, and rebuilds its books by
replaying the log on top of the newest snapshot. Records are opaque bytes to this module.

Files: one directory of segments, each named by the sequence number of its first record
(``00000000000000000001.wal``), rolled once a segment would pass ``segment_bytes``.

Record framing (little-endian), checked on write and on read::

    u32 length   payload bytes (at most RECORD_PAYLOAD_BYTES_MAX)
    u32 crc32    zlib.crc32 over the 8 seq bytes followed by the payload
    u64 seq      1, 2, 3, ... with no gap or repeat, across segments and restarts
    payload

Durability (``fsync_policy``):
    always       ``wait_durable(seq)`` returns only once ``seq`` is on disk. Concurrent waiters
                 share one fsync (group commit, leader/follower): the first waiter syncs
                 everything written so far, the others wait on a condition and are covered by
                 that sync or lead the next one. ``wait_durable_async`` hands the work to a
                 flusher thread and resolves futures through ``loop.call_soon_threadsafe``.
    every_n      a background fsync is requested every ``every_n`` records (requests made while
                 one runs are coalesced into the next); waits return at once.
    interval_ms  a background fsync every ``interval_ms`` while there is unsynced data.
Data files are synced with fdatasync (it includes the size an append changed); the directory
is fsynced whenever a segment is created or deleted.

Recovery (``WriteAheadLog.open``): every record of the last segment is validated; at the first
short header, short payload, oversized length, CRC mismatch or seq discontinuity the segment is
cut at the end of the last good record, a WARNING names the position and reason, and the
``RecoveryReport`` says what was dropped. A segment is fsynced before the next one is created,
so older segments are complete; damage there is real corruption and ``replay`` raises.

Exceptions:
    WalError
    ├── WalClosedError       append after close()
    ├── WalCorruptionError   a sealed segment (or a replayed range) does not check out
    ├── WalFailedError       a write or fsync failed; the log refuses further work
    └── WalLockedError       another WriteAheadLog holds the directory (flock on LOCK)
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import heapq
import itertools
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQ")
HEADER_BYTES = HEADER.size
_SEQ = struct.Struct("<Q")
RECORD_PAYLOAD_BYTES_MAX = 16 * 1024 * 1024
SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024
SEGMENT_SUFFIX = ".wal"
LOCK_FILE = "LOCK"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")
_READ_CHUNK_BYTES = 4 * 1024 * 1024

FsyncPolicy = Literal["always", "every_n", "interval_ms"]
CutReason = Literal["short_header", "short_payload", "length_too_large", "crc_mismatch", "seq_discontinuity"]


class WalError(Exception):
    pass


class WalClosedError(WalError):
    pass


class WalCorruptionError(WalError):
    pass


class WalFailedError(WalError):
    pass


class WalLockedError(WalError):
    pass


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def encode_record(seq: int, payload: bytes) -> bytes:
    """One framed record; the CRC covers the seq bytes and the payload."""
    if len(payload) > RECORD_PAYLOAD_BYTES_MAX:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {RECORD_PAYLOAD_BYTES_MAX}")
    crc = zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))
    return HEADER.pack(len(payload), crc, seq) + payload


def scan_records(data: bytes, first_seq: int) -> tuple[int, int, CutReason | None]:
    """Validate records from the start of `data`, which must begin at `first_seq`.

    Returns (end offset of the last good record, the seq expected next, why scanning stopped
    early or None when every byte belonged to a good record).
    """
    unpack_from = HEADER.unpack_from
    crc32 = zlib.crc32
    view = memoryview(data)
    size = len(data)
    offset = 0
    expected = first_seq
    while offset < size:
        if size - offset < HEADER_BYTES:
            return offset, expected, "short_header"
        length, crc, seq = unpack_from(data, offset)
        if length > RECORD_PAYLOAD_BYTES_MAX:
            return offset, expected, "length_too_large"
        end = offset + HEADER_BYTES + length
        if end > size:
            return offset, expected, "short_payload"
        if crc32(view[offset + 8 : end]) != crc:
            return offset, expected, "crc_mismatch"
        if seq != expected:
            return offset, expected, "seq_discontinuity"
        expected += 1
        offset = end
    return offset, expected, None


class LatencyHistogram:
    """Cumulative-bucket histogram of fsync latencies, shaped like a Prometheus histogram."""

    BOUNDS_S: tuple[float, ...] = (
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf"),
    )  # fmt: skip

    def __init__(self) -> None:
        self.bucket_counts = [0] * len(self.BOUNDS_S)
        self.count = 0
        self.sum_s = 0.0

    def observe(self, latency_s: float) -> None:
        self.bucket_counts[bisect.bisect_left(self.BOUNDS_S, latency_s)] += 1
        self.count += 1
        self.sum_s += latency_s

    def quantile_upper_bound_s(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile (0.0 when empty)."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, bucket_count in zip(self.BOUNDS_S, self.bucket_counts, strict=True):
            seen += bucket_count
            if seen >= rank:
                return bound
        return self.BOUNDS_S[-1]


@dataclass
class WalMetrics:
    records: int = 0
    bytes_written: int = 0
    fsync_count: int = 0
    segments_created: int = 0
    fsync_latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True)
class RecoveryCut:
    segment: str
    offset: int
    reason: CutReason
    truncated_bytes: int


@dataclass(frozen=True)
class RecoveryReport:
    """What open() found. `cuts` is empty when the log was clean."""

    first_seq: int
    last_seq: int
    segments: int
    cuts: tuple[RecoveryCut, ...] = ()
    removed_segments: tuple[str, ...] = ()

    @property
    def truncated_bytes(self) -> int:
        return sum(cut.truncated_bytes for cut in self.cuts)

    @property
    def reason(self) -> CutReason | None:
        return self.cuts[0].reason if self.cuts else None

    @property
    def clean(self) -> bool:
        return not self.cuts and not self.removed_segments


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_sync_file(fd: int) -> None:
    # fdatasync also flushes the file size an append changed; it skips mtime-only updates
    os.fdatasync(fd)


def _create_segment(path: Path, first_seq: int) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    fd = os.open(path / segment_name(first_seq), flags, 0o644)
    try:
        _fsync_dir(path)  # the new name must survive a crash before any record in it is acknowledged
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_segment_head(path: Path, first_seq: int) -> None:
    with open(path / segment_name(first_seq), "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or HEADER.unpack(head)[2] != first_seq:
        raise WalCorruptionError(f"sealed segment {segment_name(first_seq)} does not start at its seq")


def _lock_directory(path: Path) -> int:
    """One writer per WAL directory: a second host (or a second open) would interleave records."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise WalLockedError(f"{path} is open in another WriteAheadLog (this or another process)") from exc
    return fd


def _recover(path: Path, sync: Callable[[int], None]) -> tuple[list[int], int, int, RecoveryReport]:
    """Find the segments, cut a bad tail, open the active segment for appending (and sync it)."""
    segments = sorted(
        int(match.group(1)) for name in os.listdir(path) if (match := _SEGMENT_NAME.match(name))
    )
    cuts: list[RecoveryCut] = []
    removed: list[str] = []
    if not segments:
        segments = [1]
        fd = _create_segment(path, 1)
        return segments, fd, 0, RecoveryReport(first_seq=1, last_seq=0, segments=1)
    while True:
        first = segments[-1]
        seg_path = path / segment_name(first)
        data = seg_path.read_bytes()
        good_end, next_seq, reason = scan_records(data, first)
        if reason is not None:
            dropped = len(data) - good_end
            logger.warning(
                "wal recovery: %s cut at offset %d (%s), %d bytes dropped, last good seq %d",
                seg_path,
                good_end,
                reason,
                dropped,
                next_seq - 1,
            )
            cuts.append(RecoveryCut(seg_path.name, good_end, reason, dropped))
            os.truncate(seg_path, good_end)
        if good_end == 0 and len(segments) > 1:
            # an empty newest segment: the previous one is the real tail (and must be checked)
            seg_path.unlink()
            removed.append(seg_path.name)
            segments.pop()
            continue
        break
    if removed:
        _fsync_dir(path)
    fd = os.open(seg_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        sync(fd)  # what we read may have been only in the page cache of a crashed process
        for sealed in segments[:-1]:
            _check_segment_head(path, sealed)
    except BaseException:
        os.close(fd)
        raise
    report = RecoveryReport(
        first_seq=segments[0],
        last_seq=next_seq - 1,
        segments=len(segments),
        cuts=tuple(cuts),
        removed_segments=tuple(removed),
    )
    return segments, fd, good_end, report


def _resolve_futures(batch: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in batch:
        if future.done():  # the waiting task was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class WriteAheadLog:
    """Append-only segmented log. Build it with `WriteAheadLog.open(directory, ...)`."""

    def __init__(
        self,
        directory: Path,
        *,
        lock_fd: int,
        segments: list[int],
        active_fd: int,
        active_size: int,
        last_seq: int,
        recovery: RecoveryReport,
        fsync_policy: FsyncPolicy,
        every_n: int,
        interval_ms: int,
        segment_bytes: int,
        retain_segments: int,
        sync_file: Callable[[int], None],
        on_fsync: Callable[[float], None] | None,
    ) -> None:
        self.directory = directory
        self.fsync_policy: FsyncPolicy = fsync_policy
        self.every_n = every_n
        self.interval_ms = interval_ms
        self.segment_bytes = segment_bytes
        self.retain_segments = retain_segments
        self.recovery = recovery
        self.metrics = WalMetrics()
        self._sync_file = sync_file
        self._lock_fd = lock_fd
        self._on_fsync = on_fsync
        self._metrics_lock = threading.Lock()

        # guarded by _append_lock: the file order is the seq order
        self._append_lock = threading.Lock()
        self._segments = segments
        self._fd = active_fd
        self._active_size = active_size
        self._last_seq = last_seq
        # Records appended with `append_deferred` and not yet written: the next flush leader
        # (or an `append`, `replay` or `close`) writes them in one os.write, in seq order.
        self._pending: list[bytes] = []
        self._written_seq = last_seq
        self._retired_fds: list[int] = []  # rolled-away fds, closed by the next flush leader
        self._closed = False

        # guarded by _cv
        self._cv = threading.Condition(threading.Lock())
        self._durable_seq = last_seq  # open() synced the recovered segment
        self._flushing = False
        self._flush_wanted_seq = last_seq
        self._async_waiters: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._failed: BaseException | None = None
        self._stopping = False

        self._flusher = threading.Thread(
            target=self._flusher_main, name=f"wal-flusher:{directory}", daemon=True
        )
        self._flusher.start()

    # ------------------------------------------------------------------ opening and recovery

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        fsync_policy: FsyncPolicy = "always",
        every_n: int = 64,
        interval_ms: int = 5,
        segment_bytes: int = SEGMENT_BYTES_DEFAULT,
        retain_segments: int = 1,
        sync_file: Callable[[int], None] | None = None,
        on_fsync: Callable[[float], None] | None = None,
    ) -> WriteAheadLog:
        """Open (or create) the log in `directory`, cutting a torn or corrupt tail.

        `retain_segments`: whole segments kept below the cut point by `truncate_before`.
        `sync_file(fd)` replaces fdatasync (fault injection in tests); `on_fsync(latency_s)` is
        called after every data fsync, e.g. to feed a Prometheus histogram.
        """
        if fsync_policy not in ("always", "every_n", "interval_ms"):
            raise ValueError(f"unknown fsync_policy {fsync_policy!r}")
        if every_n < 1 or interval_ms < 1 or segment_bytes < HEADER_BYTES or retain_segments < 0:
            raise ValueError("every_n, interval_ms must be >= 1, segment_bytes >= 16, retain_segments >= 0")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        sync = sync_file or _default_sync_file
        lock_fd = _lock_directory(path)
        try:
            segments, fd, active_size, report = _recover(path, sync)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            path,
            lock_fd=lock_fd,
            segments=segments,
            active_fd=fd,
            active_size=active_size,
            last_seq=report.last_seq,
            recovery=report,
            fsync_policy=fsync_policy,
            every_n=every_n,
            interval_ms=interval_ms,
            segment_bytes=segment_bytes,
            retain_segments=retain_segments,
            sync_file=sync,
            on_fsync=on_fsync,
        )

    # ------------------------------------------------------------------ properties

    @property
    def last_seq(self) -> int:
        """The newest appended seq (0 for a log that never held a record)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """Every seq up to this one is fsynced."""
        return self._durable_seq

    @property
    def first_seq(self) -> int:
        """The oldest seq still held (retention deletes whole segments below it)."""
        return self._segments[0]

    @property
    def segment_first_seqs(self) -> list[int]:
        with self._append_lock:
            return list(self._segments)

    # ------------------------------------------------------------------ writing

    def append(self, payload: bytes) -> int:
        """Write one record and return its seq. It reaches the OS before this returns."""
        with self._append_lock:
            seq = self._queue(payload)
            self._write_pending()
        self._request_every_n(seq)
        return seq

    def append_deferred(self, payload: bytes) -> int:
        """Give `payload` the next seq and queue it; the next flush writes it (one os.write for
        everything queued since the last one) just before its fsync.

        For a caller that waits for durability anyway (`fsync=always`): the record reaches
        the OS no later than the sync `wait_durable*` asks for, and a batch of concurrent
        commands costs one write instead of one per command. A process crash loses queued
        records, which nobody was told about yet.
        """
        with self._append_lock:
            seq = self._queue(payload)
        self._request_every_n(seq)
        return seq

    def _queue(self, payload: bytes) -> int:
        """Frame `payload` as the next record and queue it. Call with _append_lock held."""
        if self._closed:
            raise WalClosedError("the log is closed")
        if self._failed is not None:
            raise WalFailedError("the log failed earlier") from self._failed
        seq = self._last_seq + 1
        self._pending.append(encode_record(seq, payload))
        self._last_seq = seq
        return seq

    def _request_every_n(self, seq: int) -> None:
        if self.fsync_policy == "every_n" and seq - self._flush_wanted_seq >= self.every_n:
            with self._cv:
                self._flush_wanted_seq = max(self._flush_wanted_seq, seq)
                self._cv.notify_all()

    def _write_pending(self) -> None:
        """Write the queued records, rolling segments where one would overflow. Call with
        _append_lock held. A failed write fails the log: the seqs were handed out already."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        seq = self._written_seq + 1
        chunk: list[bytes] = []
        chunk_bytes = 0
        total = 0
        try:
            for record in pending:
                size = self._active_size + chunk_bytes
                if size and size + len(record) > self.segment_bytes:
                    if chunk:
                        self._write(b"".join(chunk))
                        chunk, chunk_bytes = [], 0
                    self._roll(seq)
                chunk.append(record)
                chunk_bytes += len(record)
                total += len(record)
                seq += 1
            self._write(b"".join(chunk))
        except BaseException as exc:
            self._fail(exc)
            if isinstance(exc, WalError):
                raise
            raise WalFailedError(f"write failed: {exc}") from exc
        self._written_seq = seq - 1
        with self._metrics_lock:
            self.metrics.records += len(pending)
            self.metrics.bytes_written += total

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            # never leave half a record in front of the next one
            try:
                os.ftruncate(self._fd, self._active_size)
            except OSError:
                self._fail(exc)
                raise WalFailedError("write failed and the partial record could not be removed") from exc
            raise WalError(f"write failed: {exc}") from exc
        self._active_size += len(data)

    def _roll(self, first_seq: int) -> None:
        try:
            # seal: a newer segment must never exist beside an older tail that could still be torn
            self._timed_sync(self._fd)
            new_fd = _create_segment(self.directory, first_seq)
        except OSError as exc:
            self._fail(exc)
            raise WalFailedError(f"segment roll failed: {exc}") from exc
        with self._cv:
            self._durable_seq = max(self._durable_seq, first_seq - 1)
        self._retired_fds.append(self._fd)  # a flush leader may still be syncing it; closed later
        self._fd = new_fd
        self._segments.append(first_seq)
        self._active_size = 0
        with self._metrics_lock:
            self.metrics.segments_created += 1

    def _timed_sync(self, fd: int) -> None:
        started = time.perf_counter()
        self._sync_file(fd)
        latency_s = time.perf_counter() - started
        with self._metrics_lock:
            self.metrics.fsync_count += 1
            self.metrics.fsync_latency.observe(latency_s)
        if self._on_fsync is not None:
            try:
                self._on_fsync(latency_s)
            except Exception:  # a broken metrics hook must not fail the log
                logger.exception("wal on_fsync hook raised")

    def _fail(self, exc: BaseException) -> None:
        with self._cv:
            waiting = self._mark_failed(exc)
            self._cv.notify_all()
        self._wake_async(waiting, exc)

    def _mark_failed(
        self, exc: BaseException
    ) -> list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        """Refuse all further work (after a failed fsync the page cache cannot be trusted).

        Call with _cv held; returns the async waiters to fail.
        """
        if self._failed is None:
            logger.error("wal failed, refusing further work: %r", exc)
            self._failed = exc
        waiting, self._async_waiters = self._async_waiters, []
        return waiting

    # ------------------------------------------------------------------ durability

    def wait_durable(self, seq: int) -> None:
        """Under `always`, block until `seq` is fsynced; other policies return at once."""
        if seq > self._last_seq:
            raise ValueError(f"seq {seq} was never appended (last is {self._last_seq})")
        if self.fsync_policy == "always":
            self._sync_through(seq)

    async def wait_durable_async(self, seq: int) -> None:
        """The asyncio form of wait_durable: the flusher thread syncs, many awaiters share it."""
        future = self.durable_future(seq)
        if future is not None:
            await future

    def durable_future(self, seq: int) -> asyncio.Future[None] | None:
        """A future of the running loop resolved once `seq` is fsynced (None: it already is,
        or the policy does not wait). Fails with WalFailedError if the log fails first."""
        if seq > self._last_seq:
            raise ValueError(f"seq {seq} was never appended (last is {self._last_seq})")
        if self.fsync_policy != "always" or self._durable_seq >= seq:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cv:
            if self._durable_seq >= seq:
                return None
            if self._failed is not None:
                raise WalFailedError("the log failed earlier") from self._failed
            heapq.heappush(self._async_waiters, (seq, next(self._waiter_ids), loop, future))
            self._flush_wanted_seq = max(self._flush_wanted_seq, seq)
            self._cv.notify_all()
        return future

    def sync(self) -> int:
        """Fsync everything appended so far, whatever the policy; returns the durable seq."""
        target = self._last_seq
        self._sync_through(target)
        return target

    def _sync_through(self, seq: int) -> None:
        while True:
            with self._cv:
                while self._durable_seq < seq and self._flushing and self._failed is None:
                    self._cv.wait()
                if self._durable_seq >= seq:
                    return
                if self._failed is not None:
                    raise WalFailedError("the log failed earlier") from self._failed
                self._flushing = True
            self._lead_flush()

    def _lead_flush(self) -> None:
        """Sync everything written so far. Only one leader at a time (the _flushing flag)."""
        error: BaseException | None = None
        retired: list[int] = []
        target = 0
        try:
            with self._append_lock:
                self._write_pending()
                target = self._last_seq
                fd = self._fd
                retired, self._retired_fds = self._retired_fds, []
            # retired segments were synced when rolled; the active one holds everything after
            self._timed_sync(fd)
        except BaseException as exc:
            error = exc
        ready: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        with self._cv:
            self._flushing = False
            if error is None:
                self._durable_seq = max(self._durable_seq, target)
                while self._async_waiters and self._async_waiters[0][0] <= self._durable_seq:
                    ready.append(heapq.heappop(self._async_waiters))
            else:
                # in the same critical section: no waiter may lead a retry, since a second fsync
                # can succeed after the kernel dropped the dirty pages the first one failed on
                ready = self._mark_failed(error)
            self._cv.notify_all()
        for retired_fd in retired:
            os.close(retired_fd)
        self._wake_async(ready, error)

    @staticmethod
    def _wake_async(
        ready: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]],
        error: BaseException | None,
    ) -> None:
        # one call_soon_threadsafe per loop, not per future: each call writes the loop's self-pipe
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]] = {}
        for _, _, loop, future in ready:
            wrapped = None if error is None else WalFailedError(f"fsync failed: {error!r}")
            by_loop.setdefault(loop, []).append((future, wrapped))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve_futures, batch)

    def _flusher_main(self) -> None:
        interval_s = self.interval_ms / 1000
        next_tick = time.monotonic() + interval_s
        while True:
            with self._cv:
                while True:
                    if self._stopping or self._failed is not None:
                        return
                    if self.fsync_policy == "interval_ms":
                        now = time.monotonic()
                        if now >= next_tick:
                            next_tick = now + interval_s
                            self._flush_wanted_seq = max(self._flush_wanted_seq, self._last_seq)
                    if self._flush_wanted_seq > self._durable_seq and not self._flushing:
                        self._flushing = True
                        break
                    if self.fsync_policy == "interval_ms":
                        self._cv.wait(max(0.0, next_tick - time.monotonic()))
                    else:
                        self._cv.wait()
            self._lead_flush()

    # ------------------------------------------------------------------ reading

    def replay(self, from_seq: int = 1) -> Iterator[tuple[int, bytes]]:
        """Records with seq >= from_seq, oldest first, up to the last seq at the time of the call.

        Raises WalError at once when retention already removed `from_seq`; WalCorruptionError
        while iterating if a segment does not check out.
        """
        if from_seq < 1:
            raise ValueError("seqs start at 1")
        with self._append_lock:
            if self._failed is None:
                self._write_pending()  # so the files hold every record up to last_seq
            segments = list(self._segments)
            last_seq = self._written_seq
            active_size = self._active_size
        if from_seq < segments[0] and from_seq <= last_seq:
            raise WalError(
                f"records before seq {segments[0]} were removed by retention; asked from {from_seq}"
            )
        return self._replay(segments, last_seq, active_size, from_seq)

    def _replay(
        self, segments: list[int], last_seq: int, active_size: int, from_seq: int
    ) -> Iterator[tuple[int, bytes]]:
        for index, first in enumerate(segments):
            is_active = index == len(segments) - 1
            next_first = last_seq + 1 if is_active else segments[index + 1]
            if next_first <= from_seq:
                continue
            end_seq = yield from _read_segment(
                self.directory / segment_name(first), first, from_seq, active_size if is_active else None
            )
            if end_seq != next_first:
                raise WalCorruptionError(
                    f"segment {segment_name(first)} ends before seq {next_first} (next expected {end_seq})"
                )

    # ------------------------------------------------------------------ retention and shutdown

    def truncate_before(self, seq: int) -> list[str]:
        """Delete whole segments whose records are all below `seq`, keeping `retain_segments` of them.

        Call it with the seq of the oldest snapshot you may still restore from plus one. The
        active segment is never deleted. Returns the deleted file names.
        """
        with self._append_lock:
            removable = [
                first
                for first, next_first in zip(self._segments, self._segments[1:], strict=False)
                if next_first <= seq
            ]
            removable = removable[: max(0, len(removable) - self.retain_segments)]
            self._segments = self._segments[len(removable) :]
        names = [segment_name(first) for first in removable]
        for name in names:
            (self.directory / name).unlink(missing_ok=True)
        if names:
            _fsync_dir(self.directory)
        return names

    def close(self) -> None:
        """Sync what was appended, stop the flusher and close the files. Idempotent."""
        with self._append_lock:
            if self._closed:
                return
            self._closed = True
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._flusher.join()
        try:
            if self._failed is None:
                self._sync_through(self._last_seq)
        finally:
            with self._cv:
                leftover, self._async_waiters = self._async_waiters, []
            self._wake_async(leftover, self._failed or WalClosedError("closed"))
            with self._append_lock:
                for fd in [*self._retired_fds, self._fd]:
                    os.close(fd)
                self._retired_fds = []
            os.close(self._lock_fd)  # releases the directory lock

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_segment(
    path: Path, first_seq: int, from_seq: int, end_offset: int | None
) -> Generator[tuple[int, bytes], None, int]:
    """Yield (seq, payload) for seq >= from_seq; the generator returns the seq expected next.

    Reads big chunks and checks CRCs on memoryview slices, so nothing is copied but payloads.
    `end_offset` bounds the active segment to what was written when replay started.
    """
    unpack_from = HEADER.unpack_from
    crc32 = zlib.crc32
    expected = first_seq
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in finally, across yields
    except FileNotFoundError as exc:
        raise WalError(f"{path.name} was removed (retention) while replaying") from exc
    try:
        remaining = end_offset if end_offset is not None else -1
        data = b""
        offset = 0
        while True:
            want = _READ_CHUNK_BYTES if remaining < 0 else min(_READ_CHUNK_BYTES, remaining)
            chunk = handle.read(want) if want else b""
            if remaining >= 0:
                remaining -= len(chunk)
            if not chunk:
                if offset != len(data):
                    raise WalCorruptionError(
                        f"{path.name}: {len(data) - offset} trailing bytes after seq {expected - 1}"
                    )
                return expected
            data = data[offset:] + chunk if offset < len(data) else chunk
            offset = 0
            view = memoryview(data)
            size = len(data)
            while size - offset >= HEADER_BYTES:
                length, crc, seq = unpack_from(data, offset)
                if length > RECORD_PAYLOAD_BYTES_MAX:
                    raise WalCorruptionError(f"{path.name}: record length {length} at seq {expected}")
                end = offset + HEADER_BYTES + length
                if end > size:
                    break
                if crc32(view[offset + 8 : end]) != crc:
                    raise WalCorruptionError(f"{path.name}: CRC mismatch at seq {expected}")
                if seq != expected:
                    raise WalCorruptionError(f"{path.name}: seq {seq} where {expected} was expected")
                if seq >= from_seq:
                    yield seq, data[offset + HEADER_BYTES : end]
                expected += 1
                offset = end
            view.release()
    finally:
        handle.close()
