"""Snapshots in the blob store: newest valid one wins, corrupt ones are skipped, pruning keeps enough."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from emlib.blobstore.local import LocalBlobStore
from orderbook_host.snapshot_store import (
    SNAPSHOT_HEADER,
    SnapshotError,
    SnapshotStore,
    decode_snapshot,
    encode_snapshot,
)


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "objects")


@pytest.fixture
def store(blobs: LocalBlobStore) -> SnapshotStore:
    return SnapshotStore(blobs)


def _corrupt(blobs: LocalBlobStore, key: str, offset: int = -1) -> None:
    data = bytearray(blobs.get(key))
    data[offset] ^= 0x01
    blobs.put(key, bytes(data))


def test_save_writes_the_documented_key_and_header(store: SnapshotStore, blobs: LocalBlobStore) -> None:
    key = store.save("shard-1", 42, b"state bytes")
    assert key == "orderbook/shard-1/snapshots/00000000000000000042.snap"
    blob = blobs.get(key)
    magic, version, _, wal_seq, state_bytes, digest = SNAPSHOT_HEADER.unpack_from(blob)
    assert (magic, version, wal_seq, state_bytes) == (b"EMSN", 1, 42, 11)
    assert digest == hashlib.sha256(b"state bytes").digest()
    assert blob[SNAPSHOT_HEADER.size :] == b"state bytes"
    assert store.load("shard-1", 42) == b"state bytes"


def test_latest_valid_is_none_without_snapshots(store: SnapshotStore) -> None:
    assert store.latest_valid("shard-1") is None


def test_latest_valid_picks_the_newest(store: SnapshotStore) -> None:
    for wal_seq in (9, 100, 10):  # key order must follow seq order, not save order or string order
        store.save("s", wal_seq, f"state@{wal_seq}".encode())
    store.save("other", 500, b"another shard")
    assert store.latest_valid("s") == (100, b"state@100")
    assert store.seqs("s") == [9, 10, 100]


@pytest.mark.parametrize("offset", [0, 5, 12, 30, SNAPSHOT_HEADER.size, -1])
def test_a_corrupt_newest_snapshot_is_skipped(
    store: SnapshotStore, blobs: LocalBlobStore, offset: int, caplog: pytest.LogCaptureFixture
) -> None:
    store.save("s", 10, b"older state")
    newest = store.save("s", 20, b"newer state")
    _corrupt(blobs, newest, offset)
    with caplog.at_level(logging.WARNING, logger="orderbook_host.snapshot_store"):
        assert store.latest_valid("s") == (10, b"older state")
    assert newest in caplog.text


def test_truncated_and_mislabelled_snapshots_are_skipped(store: SnapshotStore, blobs: LocalBlobStore) -> None:
    store.save("s", 1, b"good")
    blobs.put(store.key("s", 2), encode_snapshot(2, b"whole")[:-1])  # short state
    blobs.put(store.key("s", 3), b"tiny")  # shorter than the header
    blobs.put(store.key("s", 4), encode_snapshot(3, b"copied under the wrong seq"))
    assert store.latest_valid("s") == (1, b"good")


def test_all_corrupt_means_none(store: SnapshotStore, blobs: LocalBlobStore) -> None:
    _corrupt(blobs, store.save("s", 1, b"x"))
    assert store.latest_valid("s") is None


def test_decode_names_the_problem() -> None:
    blob = encode_snapshot(7, b"abc")
    assert decode_snapshot(blob) == (7, b"abc")
    with pytest.raises(SnapshotError, match="magic"):
        decode_snapshot(b"XXXX" + blob[4:])
    with pytest.raises(SnapshotError, match="sha256"):
        decode_snapshot(blob[:-1] + b"d")
    with pytest.raises(SnapshotError, match="wal_seq"):
        decode_snapshot(blob, expected_wal_seq=8)


def test_prune_keeps_the_newest(store: SnapshotStore) -> None:
    for wal_seq in range(1, 6):
        store.save("s", wal_seq, bytes([wal_seq]))
    deleted = store.prune("s", keep=2)
    assert deleted == [store.key("s", wal_seq) for wal_seq in (1, 2, 3)]
    assert store.seqs("s") == [4, 5]
    assert store.oldest_seq("s") == 4
    assert store.prune("s", keep=2) == []


def test_prune_counts_only_valid_snapshots(store: SnapshotStore, blobs: LocalBlobStore) -> None:
    for wal_seq in range(1, 6):
        store.save("s", wal_seq, bytes([wal_seq]))
    _corrupt(blobs, store.key("s", 5))
    _corrupt(blobs, store.key("s", 4))
    store.prune("s", keep=2)
    assert store.seqs("s") == [2, 3, 4, 5]  # two valid ones (2, 3) are still there
    assert store.latest_valid("s") == (3, bytes([3]))


def test_bad_arguments(store: SnapshotStore) -> None:
    with pytest.raises(ValueError):
        store.save("../escape", 1, b"x")
    with pytest.raises(ValueError):
        store.save("s", -1, b"x")
    with pytest.raises(ValueError):
        store.prune("s", keep=0)


def test_a_blob_encoded_elsewhere_is_checked_then_stored_as_save_would(
    store: SnapshotStore, blobs: LocalBlobStore
) -> None:
    blob = encode_snapshot(7, b"state from the child")
    key = store.save_encoded("s", 7, blob)
    assert blobs.get(key) == blob and store.load("s", 7) == b"state from the child"
    assert blobs.get(store.save("s", 8, b"state from the child")) == encode_snapshot(
        8, b"state from the child"
    )
    with pytest.raises(SnapshotError, match="key says 9"):
        store.save_encoded("s", 9, blob)  # stamped for seq 7
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SnapshotError, match="sha256"):
        store.save_encoded("s", 10, encode_snapshot(10, b"x")[:-1] + b"y")
    with pytest.raises(SnapshotError):
        store.save_encoded("s", 7, damaged)
    assert store.seqs("s") == [7, 8]
