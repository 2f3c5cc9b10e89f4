"""Whatever damage the files take, the WAL gives back a prefix of what was written, never garbage."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderbook_host.wal import HEADER_BYTES, WalCorruptionError, WriteAheadLog

payload_lists = st.lists(st.binary(max_size=60), min_size=1, max_size=25)
# where, as a fraction of the damaged file, and what: cut the file there or flip one bit
damage = st.tuples(st.floats(min_value=0, max_value=1, exclude_max=True), st.sampled_from(["cut", "flip"]))


def _write(directory: Path, payloads: list[bytes], segment_bytes: int) -> None:
    log = WriteAheadLog.open(directory, fsync_policy="every_n", every_n=10_000, segment_bytes=segment_bytes)
    for payload in payloads:
        log.append(payload)
    log.close()


def _damage(path: Path, where: float, kind: str, bit: int) -> int:
    data = bytearray(path.read_bytes())
    offset = int(where * len(data))
    if kind == "cut":
        del data[offset:]
    else:
        data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))
    return offset


def _record_starts(payloads: list[bytes]) -> list[int]:
    starts, offset = [], 0
    for payload in payloads:
        starts.append(offset)
        offset += HEADER_BYTES + len(payload)
    return starts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=payload_lists, damage=damage, bit=st.integers(0, 7))
def test_damaged_tail_replays_exactly_the_records_before_the_damage(
    payloads: list[bytes], damage: tuple[float, str], bit: int
) -> None:
    where, kind = damage
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        _write(directory, payloads, segment_bytes=1 << 20)  # one segment: all damage is tail damage
        (segment,) = directory.glob("*.wal")
        offset = _damage(segment, where, kind, bit)
        # records that end at or before a cut survive; a flip loses the record holding it and all after
        starts = _record_starts(payloads)
        ends = [start + HEADER_BYTES + len(p) for start, p in zip(starts, payloads, strict=True)]
        survivors = (
            sum(1 for end in ends if end <= offset)
            if kind == "cut"
            else sum(1 for s in starts if s <= offset) - 1
        )

        log = WriteAheadLog.open(directory)
        try:
            assert list(log.replay()) == list(enumerate(payloads[:survivors], start=1))
            assert log.last_seq == survivors
            assert log.append(b"next") == survivors + 1
        finally:
            log.close()
        again = WriteAheadLog.open(directory)  # recovery converged: nothing more to cut
        try:
            assert again.recovery.clean and again.last_seq == survivors + 1
        finally:
            again.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=payload_lists,
    damage=damage,
    bit=st.integers(0, 7),
    segment_pick=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_damage_in_any_segment_yields_a_prefix_or_a_loud_error(
    payloads: list[bytes], damage: tuple[float, str], bit: int, segment_pick: float
) -> None:
    where, kind = damage
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        _write(directory, payloads, segment_bytes=200)
        segments = sorted(directory.glob("*.wal"))
        target = segments[int(segment_pick * len(segments))]
        if target.stat().st_size:
            _damage(target, where, kind, bit)

        replayed: list[tuple[int, bytes]] = []
        try:
            log = WriteAheadLog.open(directory, segment_bytes=200)
        except WalCorruptionError:
            return  # a sealed segment's head is damaged: refusing to start is the right answer
        try:
            for item in log.replay():
                replayed.append(item)
        except WalCorruptionError:
            pass
        finally:
            log.close()
        assert replayed == list(enumerate(payloads[: len(replayed)], start=1))
