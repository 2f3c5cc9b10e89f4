"""The write-ahead log: framing, recovery from torn and corrupt tails, group commit, retention."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orderbook_host.wal import (
    HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX,
    LatencyHistogram,
    WalClosedError,
    WalCorruptionError,
    WalError,
    WalFailedError,
    WalLockedError,
    WriteAheadLog,
    encode_record,
    scan_records,
    segment_name,
)


@pytest.fixture
def opened() -> Iterator[Callable[..., WriteAheadLog]]:
    """open() that closes whatever it opened at the end of the test."""
    logs: list[WriteAheadLog] = []

    def _open(directory: Path, **options: object) -> WriteAheadLog:
        log = WriteAheadLog.open(directory, **options)  # type: ignore[arg-type]
        logs.append(log)
        return log

    yield _open
    for log in logs:
        log.close()


def _payloads(count: int) -> list[bytes]:
    return [f"order-{index}-".encode() * (index % 5 + 1) for index in range(count)]


def _write_log(directory: Path, payloads: list[bytes], **options: object) -> None:
    log = WriteAheadLog.open(directory, **options)  # type: ignore[arg-type]
    for payload in payloads:
        log.wait_durable(log.append(payload))
    log.close()


def _replay_all(log: WriteAheadLog, from_seq: int = 1) -> list[tuple[int, bytes]]:
    return list(log.replay(from_seq))


def _only_segment(directory: Path) -> Path:
    (path,) = sorted(directory.glob("*.wal"))
    return path


# ---------------------------------------------------------------- framing and round trip


def test_record_layout_is_length_crc_seq_payload() -> None:
    record = encode_record(7, b"abc")
    length, crc, seq = struct.unpack("<IIQ", record[:16])
    assert (length, seq, record[16:]) == (3, 7, b"abc")
    assert crc == zlib.crc32(struct.pack("<Q", 7) + b"abc")


def test_round_trip(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    payloads = [b"", b"x", bytes(range(256)) * 40, *_payloads(20)]
    log = opened(tmp_path)
    seqs = [log.append(payload) for payload in payloads]
    assert seqs == list(range(1, len(payloads) + 1))
    log.wait_durable(seqs[-1])
    assert _replay_all(log) == list(zip(seqs, payloads, strict=True))
    assert _replay_all(log, from_seq=5) == list(zip(seqs, payloads, strict=True))[4:]
    assert log.metrics.records == len(payloads)
    assert log.metrics.bytes_written == sum(HEADER_BYTES + len(p) for p in payloads)
    assert _only_segment(tmp_path).name == "00000000000000000001.wal"


def test_fresh_log_is_empty(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    log = opened(tmp_path / "new")
    assert (log.last_seq, log.durable_seq, log.first_seq) == (0, 0, 1)
    assert log.recovery.clean
    assert _replay_all(log) == []


def test_seq_continues_across_reopen(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    _write_log(tmp_path, _payloads(10))
    log = opened(tmp_path)
    assert log.recovery.clean
    assert (log.last_seq, log.durable_seq) == (10, 10)
    assert log.append(b"next") == 11
    log.close()
    log = opened(tmp_path)
    assert [seq for seq, _ in log.replay()] == list(range(1, 12))


def test_payload_limit_and_closed_log(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    log = opened(tmp_path)
    with pytest.raises(ValueError):
        log.append(b"x" * (RECORD_PAYLOAD_BYTES_MAX + 1))
    with pytest.raises(ValueError):
        log.wait_durable(1)  # never appended
    log.append(b"a")
    log.close()
    log.close()  # idempotent
    with pytest.raises(WalClosedError):
        log.append(b"b")


def test_one_writer_per_directory(tmp_path: Path) -> None:
    first = WriteAheadLog.open(tmp_path)
    with pytest.raises(WalLockedError):
        WriteAheadLog.open(tmp_path)
    first.close()
    WriteAheadLog.open(tmp_path).close()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WriteAheadLog.open(tmp_path, fsync_policy="never")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WriteAheadLog.open(tmp_path, every_n=0)


# ---------------------------------------------------------------- recovery


LAST_RECORD = b"the last record, torn anywhere"


@pytest.mark.parametrize("kept_bytes", range(HEADER_BYTES + len(LAST_RECORD)))
def test_torn_tail_at_every_offset_recovers_to_last_good_record(
    tmp_path: Path, kept_bytes: int, opened: Callable[..., WriteAheadLog], caplog: pytest.LogCaptureFixture
) -> None:
    payloads = [*_payloads(4), LAST_RECORD]
    _write_log(tmp_path, payloads)
    segment = _only_segment(tmp_path)
    full_size = segment.stat().st_size
    good_size = full_size - HEADER_BYTES - len(LAST_RECORD)
    os.truncate(segment, good_size + kept_bytes)

    with caplog.at_level(logging.WARNING, logger="orderbook_host.wal"):
        log = opened(tmp_path)
    assert log.last_seq == 4
    assert _replay_all(log) == list(enumerate(payloads[:4], start=1))
    assert segment.stat().st_size == good_size
    if kept_bytes == 0:
        assert log.recovery.clean and not caplog.records
    else:
        assert log.recovery.truncated_bytes == kept_bytes
        assert log.recovery.reason == ("short_header" if kept_bytes < HEADER_BYTES else "short_payload")
        assert log.recovery.cuts[0].offset == good_size
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert f"offset {good_size}" in caplog.records[0].getMessage()
    assert log.append(b"after") == 5  # the cut log accepts appends in sequence


def _flip_bit(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_bit_flip_anywhere_in_last_record_cuts_it(tmp_path: Path) -> None:
    payloads = [*_payloads(4), LAST_RECORD]
    _write_log(tmp_path / "pristine", payloads)
    pristine = _only_segment(tmp_path / "pristine").read_bytes()
    record_start = len(pristine) - HEADER_BYTES - len(LAST_RECORD)
    for offset in range(record_start, len(pristine)):  # length, crc, seq and payload bytes
        directory = tmp_path / f"flip-{offset}"
        directory.mkdir()
        segment = directory / segment_name(1)
        segment.write_bytes(pristine)
        _flip_bit(segment, offset)
        log = WriteAheadLog.open(directory)
        try:
            assert log.last_seq == 4, offset
            assert log.recovery.cuts[0].offset == record_start
            assert log.recovery.reason in ("crc_mismatch", "short_payload", "length_too_large")
            assert _replay_all(log) == list(enumerate(payloads[:4], start=1))
        finally:
            log.close()


def test_bit_flip_in_a_middle_record_cuts_there_and_reports_it(
    tmp_path: Path, opened: Callable[..., WriteAheadLog], caplog: pytest.LogCaptureFixture
) -> None:
    payloads = _payloads(10)
    _write_log(tmp_path, payloads)
    segment = _only_segment(tmp_path)
    sizes = [HEADER_BYTES + len(p) for p in payloads]
    fourth_start = sum(sizes[:3])
    _flip_bit(segment, fourth_start + HEADER_BYTES + 2)  # a payload byte of seq 4

    with caplog.at_level(logging.WARNING, logger="orderbook_host.wal"):
        log = opened(tmp_path)
    assert log.last_seq == 3
    assert _replay_all(log) == list(enumerate(payloads[:3], start=1))
    cut = log.recovery.cuts[0]
    assert (cut.segment, cut.offset, cut.reason) == (segment.name, fourth_start, "crc_mismatch")
    assert cut.truncated_bytes == sum(sizes[3:])
    assert "crc_mismatch" in caplog.text


def test_seq_discontinuity_is_cut(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    _write_log(tmp_path, _payloads(3))
    segment = _only_segment(tmp_path)
    with open(segment, "ab") as handle:
        handle.write(encode_record(5, b"skips seq 4"))  # a valid CRC but the wrong seq
    log = opened(tmp_path)
    assert (log.last_seq, log.recovery.reason) == (3, "seq_discontinuity")


def test_zero_filled_tail_is_cut(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    # after a power cut some filesystems show the extended size filled with zeros
    _write_log(tmp_path, _payloads(3))
    segment = _only_segment(tmp_path)
    with open(segment, "ab") as handle:
        handle.write(bytes(4096))
    log = opened(tmp_path)
    assert (log.last_seq, log.recovery.truncated_bytes) == (3, 4096)
    assert log.recovery.reason == "crc_mismatch"


def test_recovery_is_idempotent(tmp_path: Path) -> None:
    _write_log(tmp_path, _payloads(6))
    segment = _only_segment(tmp_path)
    os.truncate(segment, segment.stat().st_size - 3)
    first = WriteAheadLog.open(tmp_path)
    first_replay = _replay_all(first)
    first.close()
    bytes_after_first = segment.read_bytes()
    second = WriteAheadLog.open(tmp_path)
    second_replay = _replay_all(second)
    second.close()
    assert first.recovery.last_seq == second.recovery.last_seq == 5
    assert first.recovery.truncated_bytes > 0 and second.recovery.clean
    assert first_replay == second_replay
    assert segment.read_bytes() == bytes_after_first


def test_garbage_files_in_the_directory_are_ignored(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    _write_log(tmp_path, _payloads(2))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "123.wal").write_bytes(b"not a segment name")
    assert opened(tmp_path).last_seq == 2


# ---------------------------------------------------------------- segments and retention


def test_segments_roll_and_replay_across_them(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    payloads = [bytes([index]) * 50 for index in range(40)]  # 66-byte records
    log = opened(tmp_path, segment_bytes=300)  # four records per segment
    for payload in payloads:
        log.append(payload)
    log.wait_durable(40)
    expected_firsts = list(range(1, 41, 4))
    assert log.segment_first_seqs == expected_firsts
    assert sorted(p.name for p in tmp_path.glob("*.wal")) == [segment_name(s) for s in expected_firsts]
    assert all(p.stat().st_size <= 300 for p in tmp_path.glob("*.wal"))
    assert log.metrics.segments_created == len(expected_firsts) - 1
    assert _replay_all(log) == list(enumerate(payloads, start=1))
    assert _replay_all(log, from_seq=18) == list(enumerate(payloads, start=1))[17:]
    log.close()
    reopened = opened(tmp_path, segment_bytes=300)
    assert reopened.recovery.clean and reopened.last_seq == 40
    assert _replay_all(reopened) == list(enumerate(payloads, start=1))


def test_a_record_larger_than_a_segment_gets_its_own(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    log = opened(tmp_path, segment_bytes=100)
    seqs = [log.append(b"a" * 10), log.append(b"b" * 500), log.append(b"c")]
    assert log.segment_first_seqs == [1, 2, 3]
    assert [p for _, p in log.replay()] == [b"a" * 10, b"b" * 500, b"c"]
    assert seqs == [1, 2, 3]


def test_empty_newest_segment_after_a_crash_mid_roll(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    _write_log(tmp_path, _payloads(5))
    (tmp_path / segment_name(6)).write_bytes(b"")
    log = opened(tmp_path)
    assert log.last_seq == 5
    assert log.recovery.removed_segments == (segment_name(6),)
    assert log.append(b"six") == 6
    assert [seq for seq, _ in log.replay()] == [1, 2, 3, 4, 5, 6]


def test_wholly_corrupt_newest_segment_falls_back_to_the_previous_tail(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    _write_log(tmp_path, [b"x" * 50] * 8, segment_bytes=150)  # two records per segment
    segments = sorted(tmp_path.glob("*.wal"))
    _flip_bit(segments[-1], 20)  # the first record of the newest segment
    log = opened(tmp_path, segment_bytes=150)
    assert log.last_seq == 6
    assert log.recovery.removed_segments == (segments[-1].name,)
    assert log.recovery.reason == "crc_mismatch"
    assert log.append(b"seven") == 7


def test_corruption_in_a_sealed_segment_fails_replay_loudly(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    _write_log(tmp_path, [b"x" * 50] * 8, segment_bytes=150)
    first_segment = sorted(tmp_path.glob("*.wal"))[0]
    _flip_bit(first_segment, 66 + 20)  # the second record's payload
    log = opened(tmp_path, segment_bytes=150)
    assert log.recovery.clean  # open checks only the tail segment in full
    replayed: list[int] = []
    with pytest.raises(WalCorruptionError):
        for seq, _ in log.replay():
            replayed.append(seq)
    assert replayed == [1]


def test_a_sealed_segment_with_a_wrong_first_seq_fails_open(tmp_path: Path) -> None:
    _write_log(tmp_path, [b"x" * 50] * 8, segment_bytes=150)
    first_segment = sorted(tmp_path.glob("*.wal"))[0]
    first_segment.write_bytes(encode_record(9, b"wrong"))
    with pytest.raises(WalCorruptionError):
        WriteAheadLog.open(tmp_path, segment_bytes=150)


def test_retention_deletes_whole_segments_below_a_seq(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    log = opened(tmp_path, segment_bytes=150, retain_segments=0)  # two 66-byte records per segment
    for index in range(10):
        log.append(bytes([index]) * 50)
    assert log.segment_first_seqs == [1, 3, 5, 7, 9]
    assert log.truncate_before(4) == [segment_name(1)]  # seq 3 is still needed
    assert log.first_seq == 3
    assert log.truncate_before(7) == [segment_name(3), segment_name(5)]
    assert [seq for seq, _ in log.replay(7)] == [7, 8, 9, 10]
    with pytest.raises(WalError):
        log.replay(2)
    assert log.truncate_before(1000) == [segment_name(7)]  # never the active segment
    assert log.segment_first_seqs == [9]
    log.close()

    reopened = opened(tmp_path, segment_bytes=150)
    assert (reopened.first_seq, reopened.last_seq) == (9, 10)
    assert reopened.append(b"eleven") == 11


def test_retention_keeps_extra_segments(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    log = opened(tmp_path, segment_bytes=150, retain_segments=2)
    for index in range(10):
        log.append(bytes([index]) * 50)
    assert log.truncate_before(9) == [segment_name(1), segment_name(3)]
    assert log.segment_first_seqs == [5, 7, 9]


def test_retention_down_to_an_empty_active_segment_keeps_the_seq(tmp_path: Path) -> None:
    log = WriteAheadLog.open(tmp_path, segment_bytes=66, retain_segments=0)  # one record per segment
    for _ in range(3):
        log.append(b"y" * 50)
    log.append(b"z" * 50)  # rolls to segment 4
    log.truncate_before(5)
    log.close()
    log = WriteAheadLog.open(tmp_path, segment_bytes=66)
    assert (log.first_seq, log.last_seq) == (4, 4)
    log.close()


# ---------------------------------------------------------------- durability and group commit


class SyncRecorder:
    """Wraps fdatasync and remembers how many bytes of the segment each completed sync covered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.synced_sizes: list[int] = []
        self.calls = 0

    def __call__(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        os.fdatasync(fd)
        with self.lock:
            self.synced_sizes.append(size)
            self.calls += 1

    def completed(self) -> int:
        with self.lock:
            return len(self.synced_sizes)


def _record_ends(segment: Path) -> dict[int, int]:
    """seq -> end offset of its record in the segment."""
    data = segment.read_bytes()
    ends: dict[int, int] = {}
    offset = 0
    while offset < len(data):
        length, _, seq = struct.unpack_from("<IIQ", data, offset)
        offset += HEADER_BYTES + length
        ends[seq] = offset
    return ends


def test_group_commit_shares_fsyncs_and_every_waited_seq_was_synced_first(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    recorder = SyncRecorder()
    log = opened(tmp_path, sync_file=recorder)
    threads_n, per_thread = 16, 40
    acks: list[tuple[int, int]] = []  # (seq, syncs completed when wait_durable returned)
    acks_lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def worker(thread_index: int) -> None:
        start.wait()
        for index in range(per_thread):
            seq = log.append(f"t{thread_index}-{index}".encode())
            log.wait_durable(seq)
            done = recorder.completed()
            with acks_lock:
                acks.append((seq, done))

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = threads_n * per_thread
    assert log.metrics.records == total
    assert 0 < log.metrics.fsync_count < total
    assert log.durable_seq == total
    ends = _record_ends(_only_segment(tmp_path))
    for seq, syncs_done in acks:
        # some sync that had finished before the ack covered the record's last byte
        assert max(recorder.synced_sizes[:syncs_done]) >= ends[seq], seq
    log.close()
    reopened = opened(tmp_path)
    assert sorted(seq for seq, _ in reopened.replay()) == list(range(1, total + 1))


def test_async_waiters_share_fsyncs(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    recorder = SyncRecorder()
    log = opened(tmp_path, sync_file=recorder)
    in_flight = 300

    async def order(index: int) -> tuple[int, int]:
        seq = log.append(f"async-{index}".encode())
        await log.wait_durable_async(seq)
        return seq, recorder.completed()

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(order(index) for index in range(in_flight)))

    acks = asyncio.run(main())
    assert sorted(seq for seq, _ in acks) == list(range(1, in_flight + 1))
    assert 0 < log.metrics.fsync_count < in_flight // 10
    ends = _record_ends(_only_segment(tmp_path))
    for seq, syncs_done in acks:
        assert max(recorder.synced_sizes[:syncs_done]) >= ends[seq], seq


def test_always_syncs_across_a_segment_roll(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    recorder = SyncRecorder()
    log = opened(tmp_path, sync_file=recorder, segment_bytes=150)
    for index in range(9):
        seq = log.append(bytes([index]) * 50)
        log.wait_durable(seq)
        assert log.durable_seq == seq
    # one sync per wait plus one sealing each of the four rolled-away segments
    assert log.metrics.fsync_count == recorder.calls == 9 + 4


def test_fsync_failure_fails_the_log(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    healthy = [True]

    def flaky_sync(fd: int) -> None:
        if not healthy[0]:
            raise OSError(5, "Input/output error")
        os.fdatasync(fd)

    log = opened(tmp_path, sync_file=flaky_sync)
    log.wait_durable(log.append(b"fine"))
    healthy[0] = False
    seq = log.append(b"doomed")
    with pytest.raises(WalFailedError):
        log.wait_durable(seq)
    assert log.durable_seq == 1
    with pytest.raises(WalFailedError):
        log.append(b"refused")

    async def await_it() -> None:
        await log.wait_durable_async(seq)

    with pytest.raises(WalFailedError):
        asyncio.run(await_it())


def test_no_waiter_retries_fsync_after_a_failure(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    # a retried fsync can succeed after the kernel dropped the pages the failed one lost
    calls = [0]
    calls_lock = threading.Lock()

    def fails_on_fifth_call(fd: int) -> None:
        with calls_lock:
            calls[0] += 1
            this_call = calls[0]
        if this_call == 5:
            raise OSError(5, "Input/output error")
        os.fdatasync(fd)

    log = opened(tmp_path, sync_file=fails_on_fifth_call)
    outcomes: list[str] = []

    def worker() -> None:
        try:
            while True:
                log.wait_durable(log.append(b"x"))
        except WalFailedError:
            outcomes.append("failed")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes == ["failed"] * 8
    assert calls[0] == 5


def test_async_waiter_is_failed_when_the_flusher_fsync_fails(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    def broken_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    # open() itself syncs through sync_file, so switch it to broken afterwards
    log = opened(tmp_path)
    log._sync_file = broken_sync
    seq = log.append(b"doomed")

    async def await_it() -> None:
        await asyncio.wait_for(log.wait_durable_async(seq), timeout=5)

    with pytest.raises(WalFailedError):
        asyncio.run(await_it())


def test_every_n_does_not_block_and_syncs_in_the_background(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    log = opened(tmp_path, fsync_policy="every_n", every_n=10)
    for index in range(9):
        log.wait_durable(log.append(bytes([index])))  # returns at once
    assert (log.durable_seq, log.metrics.fsync_count) == (0, 0)
    log.append(b"tenth")
    _wait_until(lambda: log.durable_seq >= 10)
    assert log.metrics.fsync_count == 1
    for index in range(25):
        log.append(bytes([index]))
    _wait_until(lambda: log.durable_seq >= 30)
    assert log.metrics.fsync_count in (2, 3)
    assert log.sync() == 35 and log.durable_seq == 35


def test_interval_policy_syncs_on_a_timer(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    log = opened(tmp_path, fsync_policy="interval_ms", interval_ms=5)
    for index in range(5):
        log.wait_durable(log.append(bytes([index])))
    _wait_until(lambda: log.durable_seq == 5)
    fsyncs = log.metrics.fsync_count
    assert fsyncs >= 1
    time.sleep(0.05)
    assert log.metrics.fsync_count == fsyncs  # nothing new, no fsync


def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_close_makes_everything_durable(tmp_path: Path) -> None:
    log = WriteAheadLog.open(tmp_path, fsync_policy="every_n", every_n=1000)
    for index in range(5):
        log.append(bytes([index]))
    assert log.durable_seq == 0
    log.close()
    assert log.durable_seq == 5


def test_fsync_metrics_and_hook(tmp_path: Path, opened: Callable[..., WriteAheadLog]) -> None:
    observed: list[float] = []
    log = opened(tmp_path, on_fsync=observed.append)
    for index in range(3):
        log.wait_durable(log.append(bytes([index])))
    assert len(observed) == log.metrics.fsync_count == log.metrics.fsync_latency.count == 3
    assert all(latency_s >= 0 for latency_s in observed)


def test_a_raising_fsync_hook_does_not_fail_the_log(
    tmp_path: Path, opened: Callable[..., WriteAheadLog], caplog: pytest.LogCaptureFixture
) -> None:
    def broken_hook(latency_s: float) -> None:
        raise RuntimeError("exporter down")

    log = opened(tmp_path, on_fsync=broken_hook)
    with caplog.at_level(logging.ERROR, logger="orderbook_host.wal"):
        log.wait_durable(log.append(b"a"))
        log.wait_durable(log.append(b"b"))
    assert log.durable_seq == 2
    assert "on_fsync hook raised" in caplog.text


def test_latency_histogram_quantiles() -> None:
    histogram = LatencyHistogram()
    assert histogram.quantile_upper_bound_s(0.5) == 0.0
    for latency_s in [0.0002] * 90 + [0.02] * 10:
        histogram.observe(latency_s)
    assert histogram.quantile_upper_bound_s(0.5) == 0.00025
    assert histogram.quantile_upper_bound_s(0.99) == 0.025
    assert histogram.count == 100 and sum(histogram.bucket_counts) == 100


def test_replay_stops_at_the_seq_appended_when_it_began(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    log = opened(tmp_path)
    for index in range(3):
        log.append(bytes([index]))
    iterator = log.replay()
    log.append(b"later")
    assert [seq for seq, _ in iterator] == [1, 2, 3]


def test_scan_records_reports_why_it_stopped() -> None:
    data = encode_record(1, b"a") + encode_record(2, b"bb")
    assert scan_records(data, 1) == (len(data), 3, None)
    assert scan_records(data[:-1], 1) == (17, 2, "short_payload")
    assert scan_records(data, 2) == (0, 2, "seq_discontinuity")
    assert scan_records(struct.pack("<IIQ", 1 << 31, 0, 1), 1) == (0, 1, "length_too_large")


# ---------------------------------------------------------------- deferred appends (one write per batch)


def test_deferred_records_reach_the_file_with_the_next_flush(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    recorder = SyncRecorder()
    log = opened(tmp_path, sync_file=recorder)
    seqs = [log.append_deferred(f"batched-{index}".encode()) for index in range(50)]
    assert seqs == list(range(1, 51)) and log.last_seq == 50
    assert _only_segment(tmp_path).stat().st_size == 0  # queued, not written
    assert log.metrics.records == 0
    log.wait_durable(50)
    # one flush wrote the 50 records and synced them together
    assert recorder.synced_sizes == [_record_ends(_only_segment(tmp_path))[50]]
    assert log.metrics.records == 50 and log.durable_seq == 50
    assert _replay_all(log) == [(seq, f"batched-{seq - 1}".encode()) for seq in seqs]


def test_replay_and_append_write_queued_records_first(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    log = opened(tmp_path, fsync_policy="every_n", every_n=1000)
    log.append_deferred(b"one")
    log.append_deferred(b"two")
    assert [p for _, p in log.replay()] == [b"one", b"two"]  # replay sees every appended record
    log.append_deferred(b"three")
    assert log.append(b"four") == 4  # an immediate append writes the queue before itself
    assert list(_record_ends(_only_segment(tmp_path))) == [1, 2, 3, 4]
    log.close()
    reopened = opened(tmp_path)
    assert reopened.recovery.clean and [p for _, p in reopened.replay()] == [
        b"one",
        b"two",
        b"three",
        b"four",
    ]


def test_a_deferred_batch_rolls_segments_where_records_would_overflow(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    payloads = [bytes([index]) * 50 for index in range(40)]  # 66-byte records, 4 per segment
    log = opened(tmp_path, segment_bytes=300)
    log.append(payloads[0])  # a batch that starts part-way into a segment
    for payload in payloads[1:]:
        log.append_deferred(payload)
    log.wait_durable(40)
    assert log.segment_first_seqs == list(range(1, 41, 4))
    assert all(p.stat().st_size <= 300 for p in tmp_path.glob("*.wal"))
    assert _replay_all(log) == list(enumerate(payloads, start=1))
    log.close()
    reopened = opened(tmp_path, segment_bytes=300)
    assert reopened.recovery.clean and _replay_all(reopened) == list(enumerate(payloads, start=1))


def test_a_failed_batch_write_fails_the_log_and_leaves_no_partial_record(
    tmp_path: Path, opened: Callable[..., WriteAheadLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened(tmp_path)
    log.wait_durable(log.append(b"kept"))
    kept_size = _only_segment(tmp_path).stat().st_size
    real_write = os.write

    def disk_full_after_a_few_bytes(fd: int, data: bytes | memoryview) -> int:
        if fd <= 2:
            return real_write(fd, data)
        real_write(fd, bytes(data)[:7])  # a short write, then the disk is full
        raise OSError(28, "No space left on device")

    for index in range(5):
        log.append_deferred(f"lost-{index}".encode())
    monkeypatch.setattr(os, "write", disk_full_after_a_few_bytes)

    async def wait() -> None:
        await log.wait_durable_async(6)

    with pytest.raises(WalFailedError):
        asyncio.run(wait())
    monkeypatch.undo()
    assert log.durable_seq == 1
    with pytest.raises(WalFailedError):
        log.append_deferred(b"refused")
    assert _only_segment(tmp_path).stat().st_size == kept_size  # the half-written batch was cut
    log.close()
    reopened = opened(tmp_path)
    assert reopened.recovery.clean and [p for _, p in reopened.replay()] == [b"kept"]


def test_durable_future_is_none_once_durable_and_resolves_after_the_sync(
    tmp_path: Path, opened: Callable[..., WriteAheadLog]
) -> None:
    recorder = SyncRecorder()
    log = opened(tmp_path, sync_file=recorder)

    async def main() -> None:
        seq = log.append_deferred(b"x")
        future = log.durable_future(seq)
        assert future is not None
        await future
        assert recorder.completed() == 1 and log.durable_seq == seq
        assert log.durable_future(seq) is None
        with pytest.raises(ValueError):
            log.durable_future(seq + 1)

    asyncio.run(main())
