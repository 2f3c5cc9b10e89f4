"""Durable jobs in PostgreSQL with idempotency keys, leases, retries and a dead-letter state.

Problem: clients retry (timeouts, crashes, at-least-once delivery), workers crash, and
pages fail to load. The same request must create one job and return the same answer
every time (design.md §6, invariant 6), and every job must finish, retry or end up
somewhere an operator can see it.

- `submit` inserts with `ON CONFLICT (job_type, idempotency_key) DO NOTHING RETURNING`:
  the unique constraint, not a check in Python, decides which of N concurrent duplicates
  wins, so there is no window between "is it there?" and "insert it". The loser reads the
  winner's row (READ COMMITTED gives each statement a fresh snapshot, and the insert waits
  for the winner to commit). A different `request_hash` under the same key is refused
  with `IdempotencyConflictError` (409 `idempotency_key_reused`).
- `claim` takes one ready job with `SELECT ... FOR UPDATE SKIP LOCKED`, so two workers
  never get the same job and never wait on each other. A job whose lease ran out (its
  worker crashed) is ready again; one that ran out on its last attempt goes `dead`.
- `fail` retries after `min(cap, base * 2**(attempts-1))` (no jitter, so the schedule is
  testable) until `max_attempts`, then marks the job `dead`, keeping `last_error`.
  `requeue_dead` gives a dead job a fresh set of attempts. A `permanent` failure ends the
  job `failed` at once (retrying a refused request cannot help).

Every time the code writes comes from the injected clock, never from SQL `now()`, so tests
control time. Layout, states and rules: docs/specs/jobs.md.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from emlib.audit_chain import canonical_json
from emlib.problems import ProblemError

Conn = Connection[TupleRow]
JobStatus = Literal["queued", "running", "succeeded", "failed", "dead"]

MAX_ERROR_CHARS = 4000
MAX_ATTEMPTS_LIMIT = 100
_COLUMNS = (
    "id, job_type, idempotency_key, request_hash, status, attempts, max_attempts, last_error, "
    "result, payload, run_after, locked_by, locked_until, created_at, updated_at"
)

_JOBS_COLUMNS = ", ".join(f"jobs.{c.strip()}" for c in _COLUMNS.split(","))

_EXPIRE_LAST_ATTEMPTS = (
    "UPDATE jobs SET status = 'dead', locked_by = NULL, locked_until = NULL, updated_at = %(now)s,"
    " last_error = left(concat('lease expired on attempt ', attempts, ' (worker ', locked_by, ')',"
    " '; last error: ' || last_error), %(max_err)s)"
    " WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND job_type = ANY(%(types)s)"
    "  AND locked_until <= %(now)s AND attempts >= max_attempts"
    "  ORDER BY locked_until LIMIT 100 FOR UPDATE SKIP LOCKED)"
)

# SKIP LOCKED: a row another worker is claiming right now is passed over, not waited for.
_CLAIM = (
    "WITH ready AS ("
    " SELECT id FROM jobs WHERE job_type = ANY(%(types)s) AND ("
    "  (status = 'queued' AND run_after <= %(now)s)"
    "  OR (status = 'running' AND locked_until <= %(now)s AND attempts < max_attempts))"
    " ORDER BY run_after, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, locked_by = %(worker)s,"
    "  locked_until = %(until)s, updated_at = %(now)s"
    f" FROM ready WHERE jobs.id = ready.id RETURNING {_JOBS_COLUMNS}"
)


class IdempotencyConflictError(ProblemError):
    """The key was used before with a different request body."""

    def __init__(self, job_type: str, idempotency_key: str, job_id: str) -> None:
        super().__init__(
            409,
            "idempotency_key_reused",
            f"idempotency_key {idempotency_key!r} was already used with a different request body",
        )
        self.job_type = job_type
        self.idempotency_key = idempotency_key
        self.job_id = job_id


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return str(uuid.uuid4())


def request_hash(body: bytes) -> str:
    """sha256 hex of the exact request bytes (hash what travelled, not a re-encoding)."""
    return hashlib.sha256(body).hexdigest()


def canonical_request_hash(value: Any) -> str:
    """sha256 hex of the canonical JSON of `value`, for callers without raw bytes."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def backoff_delay_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Delay before the next try after `attempts` tries: min(cap, base * 2**(attempts-1))."""
    assert attempts >= 1
    if attempts - 1 >= 64:  # 2**64 * base is past any sensible cap
        return cap_s
    return min(cap_s, base_s * (1 << (attempts - 1)))


@dataclass(frozen=True)
class Job:
    id: str
    job_type: str
    idempotency_key: str
    request_hash: str
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    result: Any
    payload: dict[str, Any]
    run_after: datetime
    locked_by: str | None
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SubmitResult:
    job: Job
    created: bool
    """True for a new job (HTTP 202), False when the key and body were seen before (200)."""


def _job(row: tuple[Any, ...]) -> Job:
    return Job(*row)


class JobQueue:
    def __init__(
        self,
        pool: ConnectionPool[Conn],
        *,
        clock: Callable[[], datetime] = utc_now,
        id_factory: Callable[[], str] = new_job_id,
        max_attempts: int = 5,
        backoff_base_s: float = 2.0,
        backoff_cap_s: float = 300.0,
    ) -> None:
        assert 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
        assert 0 < backoff_base_s <= backoff_cap_s
        self._pool = pool
        self._clock = clock
        self._new_id = id_factory
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s

    def _now(self) -> datetime:
        now = self._clock()
        assert now.tzinfo is not None, "the job clock must return aware datetimes"
        return now

    # -- producers ---------------------------------------------------------------------

    def submit(
        self,
        job_type: str,
        idempotency_key: str,
        payload: dict[str, Any],
        request_hash: str,
        *,
        max_attempts: int | None = None,
        conn: Conn | None = None,
    ) -> SubmitResult:
        """Create the job, or return the one this key already made.

        Raises `IdempotencyConflictError` when the key was used with another request hash.
        With `conn`, the insert joins the caller's transaction (commit is theirs)."""
        attempts_max = self.max_attempts if max_attempts is None else max_attempts
        assert 1 <= attempts_max <= MAX_ATTEMPTS_LIMIT
        if conn is None:
            with self._pool.connection() as own:
                return self._submit(own, job_type, idempotency_key, payload, request_hash, attempts_max)
        return self._submit(conn, job_type, idempotency_key, payload, request_hash, attempts_max)

    def _submit(
        self,
        conn: Conn,
        job_type: str,
        idempotency_key: str,
        payload: dict[str, Any],
        req_hash: str,
        attempts_max: int,
    ) -> SubmitResult:
        now = self._now()
        row = conn.execute(
            f"INSERT INTO jobs (id, job_type, idempotency_key, request_hash, status, attempts, max_attempts,"
            f" payload, run_after, created_at, updated_at)"
            f" VALUES (%s, %s, %s, %s, 'queued', 0, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (job_type, idempotency_key) DO NOTHING RETURNING {_COLUMNS}",
            (
                self._new_id(),
                job_type,
                idempotency_key,
                req_hash,
                attempts_max,
                Jsonb(payload),
                now,
                now,
                now,
            ),
        ).fetchone()
        if row is not None:
            return SubmitResult(_job(row), created=True)
        # The key exists (a committed row: ON CONFLICT waited for its transaction).
        # Jobs are never deleted, so this SELECT finds it.
        existing = conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE job_type = %s AND idempotency_key = %s",
            (job_type, idempotency_key),
        ).fetchone()
        assert existing is not None, "idempotency row vanished"
        job = _job(existing)
        if job.request_hash != req_hash:
            raise IdempotencyConflictError(job_type, idempotency_key, job.id)
        return SubmitResult(job, created=False)

    # -- workers -----------------------------------------------------------------------

    def claim(self, job_types: Sequence[str], worker_id: str, lease_s: float) -> Job | None:
        """Take the oldest ready job of these types for `lease_s` seconds, or None.

        Ready: queued with run_after <= now, or running with an expired lease (its worker
        is presumed dead). Each claim counts as an attempt."""
        assert job_types and worker_id and lease_s > 0
        now = self._now()
        types = list(job_types)
        with self._pool.connection() as conn:
            # A job whose lease ran out on its last attempt is not retried: dead-letter it.
            conn.execute(_EXPIRE_LAST_ATTEMPTS, {"now": now, "types": types, "max_err": MAX_ERROR_CHARS})
            row = conn.execute(
                _CLAIM,
                {"types": types, "now": now, "worker": worker_id, "until": now + timedelta(seconds=lease_s)},
            ).fetchone()
        return None if row is None else _job(row)

    def complete(self, job_id: str, worker_id: str, result: Any) -> Job | None:
        """Mark the job succeeded with `result`. None means this worker no longer holds
        the job (its lease expired and another worker claimed it): the result is dropped."""
        with self._pool.connection() as conn:
            row = conn.execute(
                f"UPDATE jobs SET status = 'succeeded', result = %s, locked_by = NULL, locked_until = NULL,"
                f" updated_at = %s WHERE id = %s AND status = 'running' AND locked_by = %s"
                f" RETURNING {_COLUMNS}",
                (Jsonb(result), self._now(), job_id, worker_id),
            ).fetchone()
        return None if row is None else _job(row)

    def fail(self, job_id: str, worker_id: str, error: str, *, permanent: bool = False) -> Job | None:
        """Record a failed attempt: back to `queued` after the backoff delay, or `dead` (the
        dead-letter state) when attempts are used up. `permanent` means retrying cannot help
        (e.g. a forbidden target): the job ends `failed` at once and is never requeued.
        None means this worker no longer holds the job."""
        now = self._now()
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT attempts, max_attempts FROM jobs"
                " WHERE id = %s AND status = 'running' AND locked_by = %s FOR UPDATE",
                (job_id, worker_id),
            ).fetchone()
            if row is None:
                return None
            attempts, attempts_max = row
            status = "failed" if permanent else "dead" if attempts >= attempts_max else "queued"
            finished = status != "queued"
            run_after = now + timedelta(
                seconds=backoff_delay_s(attempts, self.backoff_base_s, self.backoff_cap_s)
            )
            updated = conn.execute(
                f"UPDATE jobs SET status = %s, last_error = %s, locked_by = NULL, locked_until = NULL,"
                f" run_after = CASE WHEN %s THEN run_after ELSE %s END, updated_at = %s"
                f" WHERE id = %s RETURNING {_COLUMNS}",
                (status, error[:MAX_ERROR_CHARS], finished, run_after, now, job_id),
            ).fetchone()
        assert updated is not None
        return _job(updated)

    def extend_lease(self, job_id: str, worker_id: str, lease_s: float) -> Job | None:
        """Heartbeat for long jobs: push the lease out. None means the lease is lost."""
        now = self._now()
        with self._pool.connection() as conn:
            row = conn.execute(
                f"UPDATE jobs SET locked_until = %s, updated_at = %s"
                f" WHERE id = %s AND status = 'running' AND locked_by = %s RETURNING {_COLUMNS}",
                (now + timedelta(seconds=lease_s), now, job_id, worker_id),
            ).fetchone()
        return None if row is None else _job(row)

    # -- operators ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._pool.connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def requeue_dead(self, job_id: str) -> Job | None:
        """Give a dead job a fresh set of attempts, runnable now (last_error is kept).
        None when the job is not dead."""
        now = self._now()
        with self._pool.connection() as conn:
            row = conn.execute(
                f"UPDATE jobs SET status = 'queued', attempts = 0, run_after = %s, updated_at = %s"
                f" WHERE id = %s AND status = 'dead' RETURNING {_COLUMNS}",
                (now, now, job_id),
            ).fetchone()
        return None if row is None else _job(row)

    def counts(self) -> dict[str, int]:
        """Jobs per status (for /ready, metrics and the dead-letter alarm)."""
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        return {status: int(n) for status, n in rows}
