"""The blob store port.

Exceptions:
    BlobStoreError
    └── BlobNotFoundError
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*$")
KEY_BYTES_MAX = 512


class BlobStoreError(Exception):
    pass


class BlobNotFoundError(BlobStoreError, KeyError):
    pass


def check_key(key: str) -> str:
    """Keys are relative slash-separated paths with no `..`, so every adapter maps them safely."""
    if len(key) > KEY_BYTES_MAX or not _KEY.match(key) or ".." in key.split("/"):
        raise BlobStoreError(f"invalid key: {key!r}")
    return key


class BlobStore(ABC):
    """Whole-object reads and writes. `put` is atomic: readers see the old or the new bytes."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Raises BlobNotFoundError when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Deleting an absent key is not an error."""

    def ping(self) -> None:
        """Raise when the store cannot be reached (used by /ready)."""
        self.exists("__ready_probe__")


def open_blob_store(url: str) -> BlobStore:
    """`file:///abs/path` or `file://rel/path` → local folder; `s3://bucket/prefix` → S3."""
    if url.startswith("file://"):
        from emlib.blobstore.local import LocalBlobStore

        return LocalBlobStore(url.removeprefix("file://"))
    if url.startswith("s3://"):
        from emlib.blobstore.s3 import S3BlobStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3BlobStore(bucket, prefix)
    raise BlobStoreError(f"unsupported OBJECT_STORE_URL scheme: {url!r}")
