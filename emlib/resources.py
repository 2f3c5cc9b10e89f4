"""Process-wide handles to outside services, created on first use (not at import: Lambda
cold starts stay short), and resolved once from settings."""

from __future__ import annotations

import threading

import psycopg
from psycopg_pool import ConnectionPool

from emlib.audit import AuditLog
from emlib.blobstore import BlobStore, open_blob_store
from emlib.db import Conn, make_pool
from emlib.db.embedded import EmbeddedPostgres
from emlib.kv import KeyValueStore, NonceStore, open_kv
from emlib.settings import Settings
from emlib.signing import Keyring


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._database_url: str | None = None
        self._pool: ConnectionPool[Conn] | None = None
        self._blob_store: BlobStore | None = None
        self._kv: KeyValueStore | None = None
        self.keyring = Keyring(settings.hmac_keys)

    @property
    def database_url(self) -> str:
        with self._lock:
            if self._database_url is None:
                if self.settings.database_url:
                    self._database_url = self.settings.database_url
                else:
                    # Local mode with no DATABASE_URL: attach to (or start) the embedded server.
                    self._database_url = EmbeddedPostgres(self.settings.embedded_pg_dir).start()
            return self._database_url

    @property
    def pool(self) -> ConnectionPool[Conn]:
        with self._lock:
            if self._pool is None:
                self._pool = make_pool(self.database_url, max_size=self.settings.db_pool_max)
            return self._pool

    @property
    def blob_store(self) -> BlobStore:
        with self._lock:
            if self._blob_store is None:
                self._blob_store = open_blob_store(self.settings.object_store)
            return self._blob_store

    @property
    def kv(self) -> KeyValueStore:
        with self._lock:
            if self._kv is None:
                pool = None if self.settings.upstash_redis_rest_url else self.pool
                self._kv = open_kv(self.settings, pool)
            return self._kv

    def remember_nonce(self, key_id: str, nonce: str) -> bool:
        """The signature check's nonce memory, in the key-value port (shared by every instance)."""
        return NonceStore(self.kv).remember(key_id, nonce)

    def audit_log(self) -> AuditLog:
        return AuditLog(self.pool, self.settings.audit_hmac_key)

    def check_database(self) -> None:
        if self._pool is None:
            # Fail fast while the database is unreachable, rather than wait out the pool's
            # start-up timeout on every probe.
            with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        with self.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._kv is not None:
                self._kv.close()
                self._kv = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None
