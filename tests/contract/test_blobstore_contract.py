"""One contract for the blob store port, run against the local folder and S3 (under moto)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from emlib.blobstore import BlobNotFoundError, BlobStore, BlobStoreError, open_blob_store
from emlib.blobstore.local import LocalBlobStore
from emlib.blobstore.s3 import S3BlobStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "em-test-objects"
INVALID_KEYS = ["", "../x", "a/../b", "/abs", "a//b", "a/", ".hidden", "a/./b", "x" * 513, "sp ace", "ü"]


class BlobStoreContract(ABC):
    @abstractmethod
    @pytest.fixture
    def store(self) -> BlobStore: ...

    def test_round_trip(self, store: BlobStore) -> None:
        store.put("snapshots/abc", b"<html>hi</html>", content_type="text/html")
        assert store.get("snapshots/abc") == b"<html>hi</html>"
        assert store.exists("snapshots/abc")

    def test_overwrite(self, store: BlobStore) -> None:
        store.put("k", b"old")
        store.put("k", b"new")
        assert store.get("k") == b"new"
        assert store.list() == ["k"]

    def test_missing_key(self, store: BlobStore) -> None:
        with pytest.raises(BlobNotFoundError):
            store.get("nope")
        with pytest.raises(KeyError):  # BlobNotFoundError is also a KeyError
            store.get("dir/nope")
        assert not store.exists("nope")

    def test_binary_data_intact(self, store: BlobStore) -> None:
        data = bytes(range(256)) * 4096 + b"\r\n\x00"
        store.put("bin/blob.dat", data)
        store.put("bin/empty", b"")
        assert store.get("bin/blob.dat") == data
        assert store.get("bin/empty") == b""

    def test_list_by_prefix_sorted(self, store: BlobStore) -> None:
        assert store.list() == []
        keys = ["snapshots/b", "snapshots/a", "llm_raw/2.json", "llm_raw/10.json", "snapshots/a2/x", "top"]
        for key in keys:
            store.put(key, key.encode())
        assert store.list() == sorted(keys)
        assert store.list("snapshots/") == ["snapshots/a", "snapshots/a2/x", "snapshots/b"]
        assert store.list("snapshots/a") == ["snapshots/a", "snapshots/a2/x"]
        assert store.list("llm") == ["llm_raw/10.json", "llm_raw/2.json"]
        assert store.list("zzz") == []

    def test_delete_is_idempotent(self, store: BlobStore) -> None:
        store.put("d/k", b"x")
        store.delete("d/k")
        assert not store.exists("d/k")
        with pytest.raises(BlobNotFoundError):
            store.get("d/k")
        store.delete("d/k")
        store.delete("never/was")
        assert store.list() == []

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused(self, store: BlobStore, key: str) -> None:
        with pytest.raises(BlobStoreError):
            store.put(key, b"x")
        with pytest.raises(BlobStoreError):
            store.get(key)
        with pytest.raises(BlobStoreError):
            store.exists(key)
        with pytest.raises(BlobStoreError):
            store.delete(key)
        assert store.list() == []

    def test_ping(self, store: BlobStore) -> None:
        store.ping()


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "objects")

    def test_nothing_escapes_the_folder(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path / "objects")
        for key in ("../outside", "/etc/passwd"):
            with pytest.raises(BlobStoreError):
                store.put(key, b"x")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["objects"]

    def test_open_blob_store_file_url(self, tmp_path: Path) -> None:
        store = open_blob_store(f"file://{tmp_path}/objs")
        assert isinstance(store, LocalBlobStore)
        assert store.root == (tmp_path / "objs").resolve()
        store.put("a/b", b"1")
        assert (tmp_path / "objs" / "a" / "b").read_bytes() == b"1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    """moto's in-process AWS with fake credentials, and a bucket."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, aws: S3Client) -> BlobStore:
        return S3BlobStore(BUCKET, "env/prod", client=aws)

    def test_keys_live_under_the_prefix(self, aws: S3Client) -> None:
        store = S3BlobStore(BUCKET, "/env/prod/", client=aws)
        store.put("snapshots/x", b"1", content_type="text/html")
        head = aws.head_object(Bucket=BUCKET, Key="env/prod/snapshots/x")
        assert head["ContentType"] == "text/html"
        other = S3BlobStore(BUCKET, "env/dev", client=aws)
        assert other.list() == []
        assert not other.exists("snapshots/x")
        assert S3BlobStore(BUCKET, "", client=aws).list() == ["env/prod/snapshots/x"]

    def test_list_follows_pagination(self, aws: S3Client) -> None:
        store = S3BlobStore(BUCKET, "p", client=aws, list_page_size=2)
        keys = [f"k/{i:02d}" for i in range(7)]
        for key in reversed(keys):
            store.put(key, b"x")
        assert store.list() == keys
        assert store.list("k/0") == keys

    def test_missing_bucket_is_an_error_not_a_missing_key(self, aws: S3Client) -> None:
        store = S3BlobStore("no-such-bucket", "", client=aws)
        with pytest.raises(BlobStoreError) as info:
            store.get("k")
        assert not isinstance(info.value, BlobNotFoundError)
        assert "NoSuchBucket" in str(info.value)
        with pytest.raises(BlobStoreError):
            store.ping()
        with pytest.raises(BlobStoreError):
            store.put("k", b"x")

    def test_open_blob_store_s3_url(self, aws: S3Client) -> None:
        store = open_blob_store(f"s3://{BUCKET}/tenant/objects")
        assert isinstance(store, S3BlobStore)
        assert (store.bucket, store.prefix) == (BUCKET, "tenant/objects/")
        store.put("a/b", b"payload")  # boto3 client created lazily, inside mock_aws
        assert aws.get_object(Bucket=BUCKET, Key="tenant/objects/a/b")["Body"].read() == b"payload"
        bare = open_blob_store(f"s3://{BUCKET}")
        assert isinstance(bare, S3BlobStore)
        assert (bare.bucket, bare.prefix) == (BUCKET, "")
        assert bare.get("tenant/objects/a/b") == b"payload"

    def test_open_blob_store_rejects_unknown_schemes(self) -> None:
        for url in ("gs://bucket", "ftp://x", "/plain/path", ""):
            with pytest.raises(BlobStoreError):
                open_blob_store(url)
        with pytest.raises(BlobStoreError):
            open_blob_store("s3://")

    def test_importing_the_adapter_does_not_import_boto3(self) -> None:
        import subprocess
        import sys

        code = "import sys, emlib.blobstore.s3; print('boto3' in sys.modules, 'botocore' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False False"
