"""The key-value port on PostgreSQL (tables from migration 0004), for one machine.

Every operation is one statement, so atomicity comes from PostgreSQL itself:
`set_if_absent` is an `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`, `incr` an
upsert that does the arithmetic in SQL, and a token-bucket step an upsert whose SET
clause is the GCRA step of `emlib.kv.base.gcra` (the conflicting row is locked for the
statement, so concurrent steps on one bucket serialise). Expiry uses the database's
clock (`now()`), the one clock every process sharing the database agrees on. Expired
rows read as absent; `purge_expired()` deletes them (call it from a periodic job).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from emlib.db import Conn
from emlib.kv.base import (
    KeyValueError,
    KeyValueStore,
    check_bucket,
    check_key,
    check_ttl,
    emission_interval_us,
)

_LIVE = "(expires_at IS NULL OR expires_at > now())"
_EXPIRES = "now() + make_interval(secs => %(ttl)s::float8)"  # NULL ttl → NULL expiry

_SET = f"""
INSERT INTO kv_entry (key, value, expires_at) VALUES (%(key)s, %(value)s, {_EXPIRES})
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
"""

_SET_IF_ABSENT = f"""
INSERT INTO kv_entry AS e (key, value, expires_at) VALUES (%(key)s, %(value)s, {_EXPIRES})
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
    WHERE e.expires_at IS NOT NULL AND e.expires_at <= now()
RETURNING true
"""

_INCR = f"""
INSERT INTO kv_entry AS e (key, value, expires_at)
VALUES (%(key)s, convert_to(%(amount)s::bigint::text, 'UTF8'), {_EXPIRES})
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN e.expires_at IS NOT NULL AND e.expires_at <= now() THEN EXCLUDED.value
            ELSE convert_to((convert_from(e.value, 'UTF8')::bigint + %(amount)s::bigint)::text, 'UTF8')
            END,
    expires_at = CASE WHEN e.expires_at IS NOT NULL AND e.expires_at <= now() THEN EXCLUDED.expires_at
                 ELSE COALESCE(e.expires_at, EXCLUDED.expires_at)
                 END
RETURNING convert_from(value, 'UTF8')::bigint
"""

# The GCRA step (base.gcra) in SQL. SET expressions all see the old row. A new bucket
# always admits its first request (cost <= capacity).
_BUCKET = """
INSERT INTO kv_token_bucket AS b (key, tat_us, allowed)
VALUES (%(key)s, %(now_us)s + %(cost_us)s, true)
ON CONFLICT (key) DO UPDATE SET
    allowed = GREATEST(b.tat_us, %(now_us)s) + %(cost_us)s - %(burst_us)s <= %(now_us)s,
    tat_us = CASE WHEN GREATEST(b.tat_us, %(now_us)s) + %(cost_us)s - %(burst_us)s <= %(now_us)s
             THEN GREATEST(b.tat_us, %(now_us)s) + %(cost_us)s
             ELSE b.tat_us END
RETURNING allowed, tat_us
"""


class PostgresKeyValueStore(KeyValueStore):
    def __init__(self, pool: ConnectionPool[Conn]) -> None:
        self.pool = pool

    def _one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            with self.pool.connection() as conn:
                row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
                return row
        except psycopg.errors.DataException as exc:
            # a non-integer value under incr, or a bigint overflow
            raise KeyValueError(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise KeyValueError(f"postgres kv: {type(exc).__name__}: {exc}") from exc

    def _run(self, sql: str, params: dict[str, Any]) -> int:
        try:
            with self.pool.connection() as conn:
                return conn.execute(sql, params).rowcount
        except psycopg.Error as exc:
            raise KeyValueError(f"postgres kv: {type(exc).__name__}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        row = self._one(
            f"SELECT value FROM kv_entry WHERE key = %(key)s AND {_LIVE}", {"key": check_key(key)}
        )
        return None if row is None else bytes(row[0])

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        self._run(_SET, {"key": check_key(key), "value": bytes(value), "ttl": check_ttl(ttl_s)})

    def set_if_absent(self, key: str, value: bytes, ttl_s: int | None) -> bool:
        row = self._one(
            _SET_IF_ABSENT, {"key": check_key(key), "value": bytes(value), "ttl": check_ttl(ttl_s)}
        )
        return row is not None

    def delete(self, key: str) -> None:
        self._run("DELETE FROM kv_entry WHERE key = %(key)s", {"key": check_key(key)})

    def incr(self, key: str, amount: int = 1, ttl_s: int | None = None) -> int:
        row = self._one(_INCR, {"key": check_key(key), "amount": amount, "ttl": check_ttl(ttl_s)})
        assert row is not None
        return int(row[0])

    def token_bucket(
        self, key: str, capacity: int, refill_per_s: float, cost: int = 1, *, now_ms: int
    ) -> tuple[bool, int]:
        check_key(key)
        check_bucket(capacity, cost)
        interval_us = emission_interval_us(refill_per_s)
        now_us = now_ms * 1000
        row = self._one(
            _BUCKET,
            {"key": key, "now_us": now_us, "cost_us": cost * interval_us, "burst_us": capacity * interval_us},
        )
        assert row is not None
        allowed, tat_us = bool(row[0]), int(row[1])
        if allowed:
            return True, 0
        allow_at_us = tat_us + (cost - capacity) * interval_us
        return False, -(-(allow_at_us - now_us) // 1000)

    def ping(self) -> None:
        self._one("SELECT 1", {})

    def purge_expired(self, bucket_margin_s: int = 60) -> int:
        """Delete expired entries, and buckets full for `bucket_margin_s` by the database clock.

        Buckets are on the callers' clock (epoch ms); the margin absorbs clock skew
        between them and the database, since forgetting a bucket early refills it early.
        """
        entries = self._run("DELETE FROM kv_entry WHERE expires_at <= now()", {})
        buckets = self._run(
            "DELETE FROM kv_token_bucket"
            " WHERE tat_us < (extract(epoch FROM now()) * 1000000)::bigint - %(margin_us)s",
            {"margin_us": bucket_margin_s * 1_000_000},
        )
        return entries + buckets
