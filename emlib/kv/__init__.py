"""Key-value port: nonces, counters, rate limits. `open_kv` picks the adapter once, at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emlib.kv.base import KeyValueError, KeyValueStore, NonceStore

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from emlib.settings import Settings

__all__ = ["KeyValueError", "KeyValueStore", "NonceStore", "open_kv"]


def open_kv(settings: Settings, pool: ConnectionPool[Any] | None) -> KeyValueStore:
    """Upstash Redis when UPSTASH_REDIS_REST_URL is set, else PostgreSQL through `pool`."""
    if settings.upstash_redis_rest_url:
        from emlib.kv.upstash import UpstashKeyValueStore

        if not settings.upstash_redis_rest_token:
            raise KeyValueError("UPSTASH_REDIS_REST_URL is set but UPSTASH_REDIS_REST_TOKEN is empty")
        return UpstashKeyValueStore(settings.upstash_redis_rest_url, settings.upstash_redis_rest_token)
    if pool is None:
        raise KeyValueError("no UPSTASH_REDIS_REST_URL and no database pool: nowhere to keep kv state")
    from emlib.kv.postgres import PostgresKeyValueStore

    return PostgresKeyValueStore(pool)
