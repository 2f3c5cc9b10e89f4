"""Jobs on real PostgreSQL: idempotent submit (also under concurrency), SKIP LOCKED
claims, lease expiry, the backoff schedule and the dead-letter state (invariant 6)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from emlib.db import Conn, make_pool
from emlib.jobs import (
    IdempotencyConflictError,
    Job,
    JobQueue,
    SubmitResult,
    backoff_delay_s,
    canonical_request_hash,
    request_hash,
)
from emlib.problems import ProblemError

T = TypeVar("T")
T0 = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)
BODY_A = b'{"url":"https://example.org/a"}'
BODY_B = b'{"url":"https://example.org/b"}'


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def pool(db_url: str) -> Iterator[ConnectionPool[Conn]]:
    p = make_pool(db_url, max_size=8)
    yield p
    p.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(pool: ConnectionPool[Conn], clock: FakeClock) -> JobQueue:
    return JobQueue(pool, clock=clock, max_attempts=5, backoff_base_s=2.0, backoff_cap_s=10.0)


def _run_at_once(n: int, work: Callable[[int], T]) -> tuple[list[T], list[BaseException]]:
    """Start n threads that all call `work` at the same instant (a barrier)."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            value = work(i)
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


# -- submit and idempotency ------------------------------------------------------------


def test_same_key_same_body_returns_the_same_job(queue: JobQueue) -> None:
    first = queue.submit("ingest", "key-1", {"url": "https://example.org/a"}, request_hash(BODY_A))
    again = queue.submit("ingest", "key-1", {"url": "https://example.org/a"}, request_hash(BODY_A))
    assert first.created is True
    assert again.created is False
    assert again.job.id == first.job.id
    assert first.job.status == "queued"
    assert first.job.attempts == 0
    assert first.job.payload == {"url": "https://example.org/a"}
    assert first.job.created_at == T0
    assert first.job.run_after == T0
    assert queue.counts() == {"queued": 1}


def test_same_key_different_body_is_refused_409(queue: JobQueue) -> None:
    first = queue.submit("ingest", "key-1", {"url": "a"}, request_hash(BODY_A))
    with pytest.raises(IdempotencyConflictError) as caught:
        queue.submit("ingest", "key-1", {"url": "b"}, request_hash(BODY_B))
    err = caught.value
    assert isinstance(err, ProblemError)
    assert err.status == 409
    assert err.code == "idempotency_key_reused"
    assert err.body()["code"] == "idempotency_key_reused"
    assert err.job_id == first.job.id
    # nothing changed: still one job, with the first body
    job = queue.get(first.job.id)
    assert job is not None
    assert job.payload == {"url": "a"}
    assert queue.counts() == {"queued": 1}


def test_keys_are_scoped_by_job_type(queue: JobQueue) -> None:
    a = queue.submit("ingest", "k", {}, request_hash(b"x"))
    b = queue.submit("summarize", "k", {}, request_hash(b"y"))
    assert a.created and b.created
    assert a.job.id != b.job.id


def test_canonical_request_hash_ignores_key_order_and_spacing() -> None:
    assert canonical_request_hash({"b": 1, "a": "é"}) == canonical_request_hash({"a": "é", "b": 1})
    assert canonical_request_hash({"a": "é"}) == request_hash('{"a":"é"}'.encode())
    assert canonical_request_hash({"a": 1}) != canonical_request_hash({"a": 2})


def test_concurrent_duplicates_create_exactly_one_job(db_url: str, clock: FakeClock) -> None:
    """16 clients on 16 connections submit the same key at the same instant."""
    n = 16
    connections = [psycopg.connect(db_url) for _ in range(n)]
    pool = make_pool(db_url, max_size=2)  # unused by submit(conn=...), required by the class
    queue = JobQueue(pool, clock=clock)
    try:

        def submit(i: int) -> SubmitResult:
            conn = connections[i]
            try:
                result = queue.submit("ingest", "same-key", {"url": "a"}, request_hash(BODY_A), conn=conn)
                conn.commit()
                return result
            except BaseException:
                conn.rollback()
                raise

        results, errors = _run_at_once(n, submit)
    finally:
        for c in connections:
            c.close()
        pool.close()
    assert errors == []
    assert len(results) == n
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE idempotency_key = 'same-key'").fetchone()
    assert row == (1,)


def test_submit_joins_the_callers_transaction(db_url: str, queue: JobQueue) -> None:
    with psycopg.connect(db_url) as conn:
        queue.submit("ingest", "k-rolled-back", {}, request_hash(b"x"), conn=conn)
        conn.rollback()
    assert queue.counts() == {}


# -- claims and leases -----------------------------------------------------------------


def test_claim_takes_ready_jobs_of_the_given_types_oldest_first(queue: JobQueue, clock: FakeClock) -> None:
    first = queue.submit("ingest", "k1", {}, request_hash(b"1")).job
    clock.advance(1)
    second = queue.submit("ingest", "k2", {}, request_hash(b"2")).job
    queue.submit("summarize", "k3", {}, request_hash(b"3"))
    assert queue.claim(["other"], "w1", 30) is None
    got1 = queue.claim(["ingest"], "w1", 30)
    got2 = queue.claim(["ingest"], "w1", 30)
    assert got1 is not None and got2 is not None
    assert (got1.id, got2.id) == (first.id, second.id)
    assert got1.status == "running"
    assert got1.attempts == 1
    assert got1.locked_by == "w1"
    assert got1.locked_until == clock.now + timedelta(seconds=30)
    assert queue.claim(["ingest"], "w1", 30) is None


def test_concurrent_workers_never_claim_the_same_job(db_url: str, clock: FakeClock) -> None:
    pool = make_pool(db_url, max_size=8)
    queue = JobQueue(pool, clock=clock)
    try:
        job_ids = {
            queue.submit("ingest", f"k{i}", {}, request_hash(str(i).encode())).job.id for i in range(60)
        }

        def work(i: int) -> list[str]:
            mine: list[str] = []
            while (job := queue.claim(["ingest"], f"w{i}", 300)) is not None:
                mine.append(job.id)
                assert queue.complete(job.id, f"w{i}", {"by": i}) is not None
            return mine

        results, errors = _run_at_once(6, work)
    finally:
        pool.close()
    assert errors == []
    claimed = [job_id for r in results for job_id in r]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert set(claimed) == job_ids


def test_expired_lease_is_reclaimed_and_the_old_worker_loses_it(queue: JobQueue, clock: FakeClock) -> None:
    job = queue.submit("ingest", "k", {}, request_hash(b"x")).job
    assert queue.claim(["ingest"], "w1", 30) is not None
    assert queue.claim(["ingest"], "w2", 30) is None  # leased
    clock.advance(30)
    again = queue.claim(["ingest"], "w2", 30)  # w1 "crashed"
    assert again is not None
    assert again.id == job.id
    assert again.attempts == 2
    assert again.locked_by == "w2"
    assert queue.complete(job.id, "w1", {"late": True}) is None  # w1's result is dropped
    assert queue.fail(job.id, "w1", "late") is None
    assert queue.extend_lease(job.id, "w1", 30) is None
    done = queue.complete(job.id, "w2", {"ok": True})
    assert done is not None
    assert done.status == "succeeded"
    assert done.result == {"ok": True}
    assert done.locked_by is None and done.locked_until is None
    stored = queue.get(job.id)
    assert stored == done


def test_extend_lease_keeps_the_job(queue: JobQueue, clock: FakeClock) -> None:
    queue.submit("ingest", "k", {}, request_hash(b"x"))
    job = queue.claim(["ingest"], "w1", 30)
    assert job is not None
    clock.advance(20)
    assert queue.extend_lease(job.id, "w1", 30) is not None
    clock.advance(20)  # 40 s after the claim: past the first lease, inside the second
    assert queue.claim(["ingest"], "w2", 30) is None


def test_lease_expiring_on_the_last_attempt_dead_letters(
    pool: ConnectionPool[Conn], clock: FakeClock
) -> None:
    queue = JobQueue(pool, clock=clock, max_attempts=1)
    job = queue.submit("ingest", "k", {}, request_hash(b"x")).job
    assert queue.claim(["ingest"], "w1", 30) is not None
    clock.advance(31)
    assert queue.claim(["ingest"], "w2", 30) is None
    dead = queue.get(job.id)
    assert dead is not None
    assert dead.status == "dead"
    assert dead.last_error is not None and "lease expired on attempt 1" in dead.last_error
    assert dead.locked_by is None


# -- retries, backoff, dead letters ----------------------------------------------------


def test_backoff_delay_formula() -> None:
    assert [backoff_delay_s(a, 2.0, 10.0) for a in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay_s(1000, 2.0, 10.0) == 10.0


def _claim(queue: JobQueue, worker: str = "w") -> Job:
    job = queue.claim(["ingest"], worker, 30)
    assert job is not None
    return job


def test_failures_back_off_then_dead_letter(queue: JobQueue, clock: FakeClock) -> None:
    job = queue.submit("ingest", "k", {}, request_hash(b"x")).job
    schedule: list[float] = []
    for attempt in range(1, 5):
        claimed = _claim(queue)
        assert claimed.attempts == attempt
        failed = queue.fail(job.id, "w", f"boom {attempt}")
        assert failed is not None
        assert failed.status == "queued"
        assert failed.last_error == f"boom {attempt}"
        delay = (failed.run_after - clock.now).total_seconds()
        schedule.append(delay)
        clock.advance(delay - 0.001)
        assert queue.claim(["ingest"], "w", 30) is None, "claimed before its backoff elapsed"
        clock.advance(0.001)
    assert schedule == [2.0, 4.0, 8.0, 10.0]  # base 2, doubling, capped at 10
    _claim(queue)
    dead = queue.fail(job.id, "w", "boom 5")
    assert dead is not None
    assert dead.status == "dead"
    assert dead.attempts == 5
    assert dead.last_error == "boom 5"
    clock.advance(3600)
    assert queue.claim(["ingest"], "w", 30) is None  # dead jobs are never claimed
    assert queue.counts() == {"dead": 1}


def test_requeue_dead_gives_fresh_attempts(pool: ConnectionPool[Conn], clock: FakeClock) -> None:
    queue = JobQueue(pool, clock=clock, max_attempts=1)
    job = queue.submit("ingest", "k", {}, request_hash(b"x")).job
    assert queue.requeue_dead(job.id) is None  # not dead
    _claim(queue)
    assert queue.fail(job.id, "w", "boom") is not None
    requeued = queue.requeue_dead(job.id)
    assert requeued is not None
    assert requeued.status == "queued"
    assert requeued.attempts == 0
    assert requeued.last_error == "boom"
    assert _claim(queue).attempts == 1


def test_permanent_failure_ends_failed_without_retry(queue: JobQueue, clock: FakeClock) -> None:
    job = queue.submit("ingest", "k", {}, request_hash(b"x")).job
    _claim(queue)
    failed = queue.fail(job.id, "w", "forbidden_target", permanent=True)
    assert failed is not None
    assert failed.status == "failed"
    assert failed.attempts == 1
    clock.advance(3600)
    assert queue.claim(["ingest"], "w", 30) is None
    assert queue.requeue_dead(job.id) is None


def test_long_errors_are_truncated(queue: JobQueue) -> None:
    job = queue.submit("ingest", "k", {}, request_hash(b"x")).job
    _claim(queue)
    failed = queue.fail(job.id, "w", "x" * 10_000)
    assert failed is not None and failed.last_error is not None
    assert len(failed.last_error) == 4000
