"""Snapshots of a shard's state in the blob store, so restart replays only the WAL after them.

A snapshot at `wal_seq` holds the state after applying every WAL record up to and including
`wal_seq`; recovery loads the newest snapshot that verifies and replays from `wal_seq + 1`.
A corrupt newest snapshot is skipped (with a warning) for an older one, so WAL retention must
follow the *oldest* snapshot kept: `wal.truncate_before(store.oldest_seq(shard) + 1)`.

Key: ``orderbook/{shard_id}/snapshots/{wal_seq:020d}.snap`` (zero-padded, so key order is seq
order). The port's `put` is atomic, so a reader never sees half a snapshot; the checksum
catches damage at rest.

Blob layout (little-endian)::

    4s  magic        b"EMSN"
    u16 version      1
    u16 reserved     0
    u64 wal_seq      must equal the seq in the key
    u64 state_bytes
    32s sha256       of the state
    state
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct

from emlib.blobstore import BlobNotFoundError, BlobStore

logger = logging.getLogger(__name__)

MAGIC = b"EMSN"
VERSION = 1
SNAPSHOT_HEADER = struct.Struct("<4sHHQQ32s")
_SHARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,63}$")
_SNAPSHOT_NAME = re.compile(r"^(\d{20})\.snap$")


class SnapshotError(Exception):
    """A snapshot blob that does not verify."""


def encode_snapshot(wal_seq: int, state: bytes) -> bytes:
    header = SNAPSHOT_HEADER.pack(MAGIC, VERSION, 0, wal_seq, len(state), hashlib.sha256(state).digest())
    return header + state


def decode_snapshot(blob: bytes, expected_wal_seq: int | None = None) -> tuple[int, bytes]:
    """Return (wal_seq, state) or raise SnapshotError naming what is wrong."""
    wal_seq = verify_snapshot(blob, expected_wal_seq)
    return wal_seq, blob[SNAPSHOT_HEADER.size :]


def verify_snapshot(blob: bytes, expected_wal_seq: int | None = None) -> int:
    """Check a stored snapshot without copying its state (the checksum runs over a view, with
    the GIL released): returns its wal_seq or raises SnapshotError naming what is wrong."""
    if len(blob) < SNAPSHOT_HEADER.size:
        raise SnapshotError(f"{len(blob)} bytes is shorter than the header")
    magic, version, _, wal_seq, state_bytes, digest = SNAPSHOT_HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise SnapshotError(f"bad magic {magic!r}")
    if version != VERSION:
        raise SnapshotError(f"unknown version {version}")
    if expected_wal_seq is not None and wal_seq != expected_wal_seq:
        raise SnapshotError(f"header says wal_seq {wal_seq}, key says {expected_wal_seq}")
    with memoryview(blob) as view:
        state = view[SNAPSHOT_HEADER.size :]
        if len(state) != state_bytes:
            raise SnapshotError(f"state is {len(state)} bytes, header says {state_bytes}")
        if hashlib.sha256(state).digest() != digest:
            raise SnapshotError("sha256 mismatch")
        state.release()
    return int(wal_seq)


class SnapshotStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @staticmethod
    def _prefix(shard_id: str) -> str:
        if not _SHARD_ID.match(shard_id):
            raise ValueError(f"invalid shard id {shard_id!r}")
        return f"orderbook/{shard_id}/snapshots/"

    def key(self, shard_id: str, wal_seq: int) -> str:
        if wal_seq < 0:
            raise ValueError("wal_seq must be >= 0")
        return f"{self._prefix(shard_id)}{wal_seq:020d}.snap"

    def save(self, shard_id: str, wal_seq: int, state: bytes) -> str:
        """Store the state as of `wal_seq` (atomic through the port); returns the key."""
        key = self.key(shard_id, wal_seq)
        self.blobs.put(key, encode_snapshot(wal_seq, state))
        return key

    def save_encoded(self, shard_id: str, wal_seq: int, blob: bytes) -> str:
        """Store a blob `encode_snapshot(wal_seq, state)` made elsewhere (the forked child),
        checked first; returns the key."""
        verify_snapshot(blob, wal_seq)
        key = self.key(shard_id, wal_seq)
        self.blobs.put(key, blob)
        return key

    def seqs(self, shard_id: str) -> list[int]:
        """The wal_seqs of stored snapshots, oldest first (valid or not)."""
        prefix = self._prefix(shard_id)
        found = []
        for key in self.blobs.list(prefix):
            match = _SNAPSHOT_NAME.match(key[len(prefix) :])
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def oldest_seq(self, shard_id: str) -> int | None:
        seqs = self.seqs(shard_id)
        return seqs[0] if seqs else None

    def load(self, shard_id: str, wal_seq: int) -> bytes:
        """The state of one snapshot; raises SnapshotError or BlobNotFoundError."""
        return decode_snapshot(self.blobs.get(self.key(shard_id, wal_seq)), wal_seq)[1]

    def _verified(self, shard_id: str, wal_seq: int) -> bytes | None:
        try:
            return self.load(shard_id, wal_seq)
        except BlobNotFoundError:
            return None  # pruned between list and get
        except SnapshotError as exc:
            logger.warning("snapshot %s is corrupt, skipping: %s", self.key(shard_id, wal_seq), exc)
            return None

    def _is_valid(self, shard_id: str, wal_seq: int) -> bool:
        try:
            verify_snapshot(self.blobs.get(self.key(shard_id, wal_seq)), wal_seq)
        except BlobNotFoundError:
            return False  # pruned between list and get
        except SnapshotError as exc:
            logger.warning("snapshot %s is corrupt, skipping: %s", self.key(shard_id, wal_seq), exc)
            return False
        return True

    def latest_valid(self, shard_id: str) -> tuple[int, bytes] | None:
        """The newest snapshot whose checksum verifies, or None when there is none."""
        for wal_seq in reversed(self.seqs(shard_id)):
            state = self._verified(shard_id, wal_seq)
            if state is not None:
                return wal_seq, state
        return None

    def prune(self, shard_id: str, keep: int = 2) -> list[str]:
        """Keep the newest `keep` *valid* snapshots (and any newer corrupt ones); delete older.

        Counting only valid ones means a corrupt newest snapshot never leaves us with nothing
        to restore from. Returns the deleted keys.
        """
        if keep < 1:
            raise ValueError("keep at least one snapshot")
        seqs = self.seqs(shard_id)
        valid_seen = 0
        cut = 0  # seqs[:cut] are deleted
        for index in range(len(seqs) - 1, -1, -1):
            if self._is_valid(shard_id, seqs[index]):
                valid_seen += 1
                if valid_seen == keep:
                    cut = index
                    break
        deleted = [self.key(shard_id, wal_seq) for wal_seq in seqs[:cut]]
        for key in deleted:
            self.blobs.delete(key)
        return deleted
