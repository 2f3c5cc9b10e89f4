"""Object store port: content by key, the same key layout on S3 and on a local folder."""

from emlib.blobstore.base import BlobNotFoundError, BlobStore, BlobStoreError, open_blob_store

__all__ = ["BlobNotFoundError", "BlobStore", "BlobStoreError", "open_blob_store"]
