"""The audit log in PostgreSQL: append under a lock, read, verify.

Problem: every admin decision must leave a record that cannot be quietly edited, cut or
rearranged (design.md §6, invariant 5). `emlib.audit_chain` holds the pure rules (hash,
HMAC, verification); this module does the I/O:

- `append` locks the single `audit_head` row (`SELECT ... FOR UPDATE`), builds the next
  event from it, inserts the event and moves the head, all in one transaction. The lock
  serialises appenders, so seqs have no gaps and the chain never forks. Pass `conn=` to
  join the caller's transaction: the business change and its audit event then commit (or
  roll back) together. Keep the append last in that transaction, since the head lock is
  held until commit.
- The database refuses UPDATE, DELETE and TRUNCATE on `audit_events` and any head move
  that does not follow an insert (triggers in migration 0003). Those stop mistakes; an
  owner or superuser can disable them, and then verification is what catches the edit.
- `verify` streams the log in seq order inside one REPEATABLE READ snapshot, so the
  events and the head it compares agree with each other even while appends continue.

Layout and result codes: docs/specs/audit.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from emlib.audit_chain import (
    AuditEvent,
    ChainVerifier,
    Checkpoint,
    VerifyReport,
    seal,
)

Conn = Connection[TupleRow]

_COLUMNS = "id, seq, ts, actor, action, target, payload, job_id, prev_hash, hash, hmac"
VERIFY_PAGE_SIZE = 1000


class AuditHeadMissingError(RuntimeError):
    """The `audit_head` row is gone: the log was tampered with or never migrated."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def _event(row: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(
        id=row[0],
        seq=row[1],
        ts=row[2],
        actor=row[3],
        action=row[4],
        target=row[5],
        payload=row[6],
        job_id=row[7],
        prev_hash=row[8],
        hash=row[9],
        hmac=row[10],
    )


def key_bytes(key: bytes | str) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    assert len(raw) >= 16, "AUDIT_HMAC_KEY must be at least 16 bytes"
    return raw


class AuditLog:
    def __init__(
        self,
        pool: ConnectionPool[Conn],
        key: bytes | str,
        *,
        clock: Callable[[], datetime] = utc_now,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        self._pool = pool
        self._key = key_bytes(key)
        self._clock = clock
        self._new_id = id_factory

    def append(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        payload: dict[str, Any] | None = None,
        job_id: str | None = None,
        conn: Conn | None = None,
    ) -> AuditEvent:
        """Append one event. Raises ValueError for a payload that cannot be hashed stably
        (floats, non-string keys): see `audit_chain.check_payload`.

        A caller's `conn` should be at READ COMMITTED (the default): under REPEATABLE READ
        a concurrent append makes the head lock fail with a serialization error."""
        body = payload or {}
        if conn is None:
            with self._pool.connection() as own:  # commits on leaving the block
                return self._append(own, actor, action, target, body, job_id)
        if conn.autocommit:
            with conn.transaction():
                return self._append(conn, actor, action, target, body, job_id)
        # The caller's transaction: it commits or rolls back the event with its own change.
        return self._append(conn, actor, action, target, body, job_id)

    def _append(
        self, conn: Conn, actor: str, action: str, target: str, payload: dict[str, Any], job_id: str | None
    ) -> AuditEvent:
        row = conn.execute("SELECT seq, hash, hmac FROM audit_head WHERE singleton FOR UPDATE").fetchone()
        if row is None:
            raise AuditHeadMissingError("audit_head row missing")
        prev = None if row[0] == 0 else Checkpoint(row[0], row[1], row[2])
        event, head = seal(
            self._key,
            prev=prev,
            id=self._new_id(),
            ts=self._clock(),
            actor=actor,
            action=action,
            target=target,
            payload=payload,
            job_id=job_id,
        )
        conn.execute(
            f"INSERT INTO audit_events ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.id,
                event.seq,
                event.ts,
                event.actor,
                event.action,
                event.target,
                Jsonb(event.payload),
                event.job_id,
                event.prev_hash,
                event.hash,
                event.hmac,
            ),
        )
        conn.execute(
            "UPDATE audit_head SET seq = %s, hash = %s, hmac = %s WHERE singleton",
            (head.seq, head.hash, head.hmac),
        )
        return event

    def get(self, event_id: str) -> AuditEvent | None:
        with self._pool.connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM audit_events WHERE id = %s", (event_id,)).fetchone()
        return None if row is None else _event(row)

    def events(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEvent]:
        """A page of events in seq order (limit capped at 1000)."""
        limit = max(1, min(limit, 1000))
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_events WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            ).fetchall()
        return [_event(r) for r in rows]

    def head(self) -> Checkpoint | None:
        with self._pool.connection() as conn:
            return read_head(conn)

    def verify(self, *, anchors: Mapping[int, str] | None = None) -> VerifyReport:
        with self._pool.connection() as conn:
            return verify_database(conn, self._key, anchors=anchors)


def read_head(conn: Conn) -> Checkpoint | None:
    row = conn.execute("SELECT seq, hash, hmac FROM audit_head WHERE singleton").fetchone()
    return None if row is None else Checkpoint(row[0], row[1], row[2])


def verify_database(
    conn: Conn,
    key: bytes | str,
    *,
    anchors: Mapping[int, str] | None = None,
    page_size: int = VERIFY_PAGE_SIZE,
) -> VerifyReport:
    """Verify every stored event and the head from one consistent snapshot.

    `conn` must be idle (it is never used to roll back someone else's work); it is left
    idle again (the read-only transaction is rolled back)."""
    assert conn.info.transaction_status == TransactionStatus.IDLE, "verify_database needs an idle connection"
    verifier = ChainVerifier(key_bytes(key), dict(anchors or {}))
    was_autocommit = conn.autocommit
    if was_autocommit:
        conn.autocommit = False
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        head = read_head(conn)
        with conn.cursor(name="audit_verify") as cur:  # server-side: a long log streams
            cur.itersize = page_size
            cur.execute(f"SELECT {_COLUMNS} FROM audit_events ORDER BY seq")
            for row in cur:
                if not verifier.feed(_event(row)):
                    break
        return verifier.finish(head)
    finally:
        conn.rollback()
        if was_autocommit:
            conn.autocommit = True
