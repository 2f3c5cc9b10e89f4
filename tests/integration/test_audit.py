"""The audit log on real PostgreSQL (invariant 5): serialised appends, the database's own
append-only guards, one test per tamper kind, the CLI and the HTTP endpoint.

Tamper tests play an attacker with database access: they switch the table's triggers off
(`ALTER TABLE ... DISABLE TRIGGER USER`, which needs the owner or a superuser) to edit rows
behind the application's back, exactly as a real attacker with those rights could. They
do not have AUDIT_HMAC_KEY.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

import emlib.audit_chain as chain
from emlib.audit import AuditLog
from emlib.audit_chain import GENESIS_HASH, AuditEvent, event_hash, sign, sign_head
from emlib.audit_http import make_audit_router
from emlib.db import Conn, make_pool

KEY = "integration-audit-key-0123456789"
OTHER_KEY = b"attacker-guessed-key-987654321"
T0 = datetime(2026, 11, 21, 8, 0, 0, 123456, tzinfo=UTC)
INSERT_EVENT = (
    "INSERT INTO audit_events (id, seq, ts, actor, action, target, payload, job_id, prev_hash, hash, hmac)"
)
REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def pool(db_url: str) -> Iterator[ConnectionPool[Conn]]:
    p = make_pool(db_url, max_size=8)
    yield p
    p.close()


@pytest.fixture
def log(pool: ConnectionPool[Conn]) -> AuditLog:
    return AuditLog(pool, KEY, clock=FakeClock())


def fill(log: AuditLog, n: int) -> list[AuditEvent]:
    return [
        log.append(
            actor="admin:alice",
            action="approve_market",
            target=f"MKT-{i}",
            payload={"reason": "ok ✓", "n": i, "big": 2**70, "list": [1, "two", None, False]},
            job_id=f"job-{i}" if i % 2 else None,
        )
        for i in range(1, n + 1)
    ]


def as_attacker(db_url: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run SQL with the audit triggers switched off, then switch them back on."""
    with psycopg.connect(db_url) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE audit_head DISABLE TRIGGER USER")
        for sql, params in statements:
            conn.execute(sql.encode(), params)
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE audit_head ENABLE TRIGGER USER")


def assert_caught(log: AuditLog, problem: str, first_bad_seq: int) -> None:
    report = log.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, problem, first_bad_seq), report


# -- appending -------------------------------------------------------------------------


def test_appended_events_round_trip_and_verify(log: AuditLog) -> None:
    events = fill(log, 3)
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[0].ts == T0 + timedelta(milliseconds=1) - timedelta(microseconds=456)
    assert log.events() == events  # ts, payload (unicode, 2**70) and job_id survive storage
    assert log.get(events[1].id) == events[1]
    assert log.get("nope") is None
    assert log.events(after_seq=2) == events[2:]
    head = log.head()
    assert head is not None
    assert (head.seq, head.hash) == (3, events[2].hash)
    report = log.verify()
    assert report.ok, report
    assert (report.events, report.head_hash) == (3, events[2].hash)


def test_empty_log_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert (report.ok, report.events, report.head_hash) == (True, 0, GENESIS_HASH)


def test_concurrent_appenders_make_one_gapless_chain(pool: ConnectionPool[Conn]) -> None:
    log = AuditLog(pool, KEY)
    threads_n, per_thread = 8, 10
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for j in range(per_thread):
                log.append(actor=f"worker-{i}", action="note", target="t", payload={"j": j})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    events = log.events(limit=1000)
    assert [e.seq for e in events] == list(range(1, threads_n * per_thread + 1))
    report = log.verify()
    assert report.ok, report
    assert report.events == threads_n * per_thread


def test_append_joins_the_callers_transaction(db_url: str, log: AuditLog) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE market (symbol text PRIMARY KEY, status text)")
        conn.commit()
        conn.execute("INSERT INTO market VALUES ('A', 'approved')")
        log.append(actor="admin:alice", action="approve_market", target="A", conn=conn)
        conn.rollback()  # the business change failed: no audit event either
        assert log.events() == []
        assert log.verify().ok

        conn.execute("INSERT INTO market VALUES ('B', 'approved')")
        event = log.append(actor="admin:alice", action="approve_market", target="B", conn=conn)
        conn.commit()
    assert log.events() == [event]
    assert event.seq == 1  # the rolled-back append left no gap
    assert log.verify().ok


def test_floats_are_refused_before_touching_the_database(log: AuditLog) -> None:
    with pytest.raises(ValueError):
        log.append(actor="a", action="b", target="c", payload={"price": 0.5})
    assert log.verify().events == 0


# -- the database's own guards ---------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_events SET payload = '{}' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
        "UPDATE audit_head SET seq = 1, hash = (SELECT hash FROM audit_events WHERE seq = 1)",
        "DELETE FROM audit_head",
        "TRUNCATE audit_head",
    ],
)
def test_database_refuses_changes_to_the_log(db_url: str, log: AuditLog, sql: str) -> None:
    fill(log, 2)
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.errors.DatabaseError):
        conn.execute(sql.encode())
    assert log.verify().ok
    assert log.verify().events == 2


def test_database_refuses_an_insert_that_does_not_extend_the_head(db_url: str, log: AuditLog) -> None:
    events = fill(log, 2)
    forged = (
        INSERT_EVENT
        + " VALUES ('x', %s, now(), 'a', 'b', 'c', '{}', NULL, %s, repeat('a', 64), repeat('b', 64))"
    )
    with psycopg.connect(db_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(forged, (5, events[1].hash))  # skips seqs
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(forged, (3, events[0].hash))  # a fork off event 1
    assert log.verify().ok


# -- tampering with triggers off: one test per kind ------------------------------------


def test_edited_payload_is_a_hash_mismatch(db_url: str, log: AuditLog) -> None:
    fill(log, 4)
    as_attacker(
        db_url, ("UPDATE audit_events SET payload = %s WHERE seq = 2", (Jsonb({"reason": "edited"}),))
    )
    assert_caught(log, chain.HASH_MISMATCH, 2)


def test_edited_payload_with_recomputed_hash_is_an_hmac_mismatch(db_url: str, log: AuditLog) -> None:
    events = fill(log, 4)
    e = events[1]
    payload = {"reason": "edited"}
    new_hash = event_hash(
        seq=e.seq,
        id=e.id,
        ts=e.ts,
        actor=e.actor,
        action=e.action,
        target=e.target,
        payload=payload,
        job_id=e.job_id,
        prev_hash=e.prev_hash,
    )
    as_attacker(
        db_url, ("UPDATE audit_events SET payload = %s, hash = %s WHERE seq = 2", (Jsonb(payload), new_hash))
    )
    assert_caught(log, chain.HMAC_MISMATCH, 2)


def test_removed_event_is_caught(db_url: str, log: AuditLog) -> None:
    fill(log, 4)
    as_attacker(db_url, ("DELETE FROM audit_events WHERE seq = 2", ()))
    assert_caught(log, chain.SEQ_MISMATCH, 2)


def test_inserted_event_is_caught(db_url: str, log: AuditLog) -> None:
    """A forged event appended after the head, linked correctly, signed with a guessed key."""
    events = fill(log, 3)
    ts = T0 + timedelta(days=1)
    forged_hash = event_hash(
        seq=4,
        id="forged",
        ts=ts,
        actor="admin:mallory",
        action="resolve_market",
        target="MKT-1",
        payload={},
        job_id=None,
        prev_hash=events[2].hash,
    )
    as_attacker(
        db_url,
        (
            INSERT_EVENT
            + " VALUES ('forged', 4, %s, 'admin:mallory', 'resolve_market', 'MKT-1', '{}', NULL, %s, %s, %s)",
            (ts, events[2].hash, forged_hash, sign(OTHER_KEY, forged_hash)),
        ),
        (
            "UPDATE audit_head SET seq = 4, hash = %s, hmac = %s",
            (forged_hash, sign_head(OTHER_KEY, 4, forged_hash)),
        ),
    )
    assert_caught(log, chain.HMAC_MISMATCH, 4)


def test_reordered_events_are_caught(db_url: str, log: AuditLog) -> None:
    fill(log, 4)
    as_attacker(
        db_url,
        ("UPDATE audit_events SET seq = 1002 WHERE seq = 2", ()),
        ("UPDATE audit_events SET seq = 2 WHERE seq = 3", ()),
        ("UPDATE audit_events SET seq = 3 WHERE seq = 1002", ()),
    )
    assert_caught(log, chain.PREV_HASH_MISMATCH, 2)


def test_removed_tail_is_caught_by_the_signed_head(db_url: str, log: AuditLog) -> None:
    fill(log, 4)
    as_attacker(db_url, ("DELETE FROM audit_events WHERE seq > 2", ()))
    assert_caught(log, chain.HEAD_MISMATCH, 3)


def test_removed_tail_with_head_moved_back_is_caught(db_url: str, log: AuditLog) -> None:
    events = fill(log, 4)
    as_attacker(
        db_url,
        ("DELETE FROM audit_events WHERE seq > 2", ()),
        ("UPDATE audit_head SET seq = 2, hash = %s, hmac = %s", (events[1].hash, events[1].hmac)),
    )
    assert_caught(log, chain.HEAD_HMAC_MISMATCH, 2)


def test_deleted_head_is_caught(db_url: str, log: AuditLog) -> None:
    fill(log, 2)
    as_attacker(db_url, ("DELETE FROM audit_head", ()))
    assert_caught(log, chain.HEAD_MISSING, 3)


def test_rollback_to_an_old_state_is_caught_by_an_anchor(db_url: str, log: AuditLog) -> None:
    """Truncate to seq 2 and restore the head as it was then: only an anchor kept outside
    the database (the head_hash printed by an earlier verify) can tell."""
    events = fill(log, 2)
    old_head = log.head()
    assert old_head is not None
    later = fill(log, 2)
    as_attacker(
        db_url,
        ("DELETE FROM audit_events WHERE seq > 2", ()),
        (
            "UPDATE audit_head SET seq = %s, hash = %s, hmac = %s",
            (old_head.seq, old_head.hash, old_head.hmac),
        ),
    )
    assert log.verify().ok  # validly signed, just old
    report = log.verify(anchors={2: events[1].hash, 4: later[-1].hash})
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.ANCHOR_MISMATCH, 4)


# -- the CLI and the HTTP endpoint -----------------------------------------------------


def run_cli(*args: str, database_url: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "AUDIT_HMAC_KEY": KEY, "APP_ENV": "test"}
    return subprocess.run(
        [sys.executable, "-m", "emlib.audit_cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_verify_exits_0_then_1_after_tampering(db_url: str, log: AuditLog) -> None:
    events = fill(log, 3)
    ok = run_cli("verify", "--database-url", db_url)
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert (body["ok"], body["events"], body["head_hash"]) == (True, 3, events[2].hash)

    from_env = run_cli("verify", f"--anchor=3:{events[2].hash}", database_url=db_url)  # URL from DATABASE_URL
    assert from_env.returncode == 0, from_env.stderr

    as_attacker(db_url, ("UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 2", ()))
    bad = run_cli("verify", "--database-url", db_url)
    assert bad.returncode == 1, bad.stderr
    body = json.loads(bad.stdout)
    assert (body["ok"], body["events"], body["problem"], body["first_bad_seq"]) == (
        False,
        1,
        chain.HASH_MISMATCH,
        2,
    )


def test_cli_without_a_database_url_exits_2() -> None:
    result = run_cli("verify")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_http_verify_endpoint_with_guard(db_url: str, log: AuditLog) -> None:
    events = fill(log, 2)

    def admin_only(x_admin: str = Header("")) -> None:
        if x_admin != "yes":
            raise HTTPException(status_code=401)

    app = FastAPI()
    app.include_router(make_audit_router(log, guard=admin_only))
    with TestClient(app) as client:
        assert client.get("/api/v1/admin/audit/verify").status_code == 401
        response = client.get("/api/v1/admin/audit/verify", headers={"X-Admin": "yes"})
        assert response.status_code == 200
        body = response.json()
        assert (body["ok"], body["events"], body["head_hash"]) == (True, 2, events[1].hash)

        as_attacker(db_url, ("DELETE FROM audit_events WHERE seq = 1", ()))
        body = client.get("/api/v1/admin/audit/verify", headers={"X-Admin": "yes"}).json()
        assert (body["ok"], body["problem"], body["first_bad_seq"]) == (False, chain.SEQ_MISMATCH, 1)

    lazy = FastAPI()
    lazy.include_router(make_audit_router(lambda: log))
    with TestClient(lazy) as client:
        assert client.get("/api/v1/admin/audit/verify").json()["ok"] is False
