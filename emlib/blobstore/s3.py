"""The blob store port on Amazon S3 (boto3), with the same key layout as the local folder.

`put` is a single PutObject, which S3 makes atomic: a reader sees the old object or the
new one, never a part. Keys are checked by `check_key` before any call, then stored under
an optional prefix (`s3://bucket/prefix` → `prefix/<key>`). boto3 is imported on first use
so importing this module (and every service that merely could use S3) stays cheap.

Errors: a missing object is `BlobNotFoundError`; any other client or network failure is
`BlobStoreError` with the AWS error code in its message.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any

from emlib.blobstore.base import BlobNotFoundError, BlobStore, BlobStoreError, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


class S3BlobStore(BlobStore):
    def __init__(
        self, bucket: str, prefix: str = "", client: S3Client | None = None, list_page_size: int = 1000
    ) -> None:
        if not bucket:
            raise BlobStoreError("S3 bucket name is empty")
        assert 1 <= list_page_size <= 1000, "S3 returns at most 1000 keys per page"
        self.bucket = bucket
        self.list_page_size = list_page_size
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        # boto3's default session is not safe to use from two threads at once: create once, locked
        with self._client_lock:
            if self._client is None:
                import boto3

                self._client = boto3.client("s3")
            return self._client

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, action: str, key: str, exc: Exception) -> BlobStoreError:
        code = _error_code(exc)
        if code in _NOT_FOUND:
            return BlobNotFoundError(key)
        return BlobStoreError(
            f"s3 {action} {self.bucket}/{self.prefix}{key}: {code or type(exc).__name__}: {exc}"
        )

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        object_key = self._object_key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data, ContentType=content_type)
        except _aws_errors() as exc:
            raise self._error("put", key, exc) from exc

    def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=object_key)
            body: bytes = response["Body"].read()
            return body
        except _aws_errors() as exc:
            raise self._error("get", key, exc) from exc

    def exists(self, key: str) -> bool:
        object_key = self._object_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=object_key)
            return True
        except _aws_errors() as exc:
            error = self._error("head", key, exc)
            if isinstance(error, BlobNotFoundError):
                return False
            raise error from exc

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                PaginationConfig={"PageSize": self.list_page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    keys.append(item["Key"].removeprefix(self.prefix))
        except _aws_errors() as exc:
            raise self._error("list", prefix, exc) from exc
        # S3 lists in UTF-8 byte order; the port promises Python's sort order (they agree
        # for the ASCII keys check_key allows, but sorting keeps the promise explicit).
        return sorted(keys)

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=object_key)  # absent key: S3 answers 204
        except _aws_errors() as exc:
            error = self._error("delete", key, exc)
            if not isinstance(error, BlobNotFoundError):
                raise error from exc

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except _aws_errors() as exc:
            raise BlobStoreError(f"s3 bucket {self.bucket} not reachable: {_error_code(exc) or exc}") from exc


@cache
def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's exception bases, imported only once an error needs matching."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _error_code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
