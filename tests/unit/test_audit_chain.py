"""The pure audit chain: canonical encoding, a golden hash, and one test per tamper kind."""

from __future__ import annotations

import ast
import dataclasses
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import emlib.audit_chain as chain
from emlib.audit_chain import (
    GENESIS_HASH,
    AuditEvent,
    Checkpoint,
    canonical_json,
    event_hash,
    format_ts,
    seal,
    sign,
    sign_head,
    verify_chain,
)

KEY = b"unit-test-audit-key-0123456789"
OTHER_KEY = b"attacker-guessed-key-987654321"
T0 = datetime(2026, 11, 21, 8, 0, 0, 123456, tzinfo=UTC)


def build(n: int, key: bytes = KEY) -> tuple[list[AuditEvent], Checkpoint]:
    events: list[AuditEvent] = []
    head: Checkpoint | None = None
    for i in range(n):
        event, head = seal(
            key,
            prev=head,
            id=f"00000000-0000-4000-8000-{i:012d}",
            ts=T0 + timedelta(seconds=i),
            actor="admin:alice",
            action="approve_market",
            target=f"US-CPI-{i}",
            payload={"reason": "ok ✓", "n": i, "tags": ["a", None, True]},
            job_id=None if i % 2 else f"job-{i}",
        )
        events.append(event)
    assert head is not None
    return events, head


def edit(event: AuditEvent, **changes: Any) -> AuditEvent:
    return dataclasses.replace(event, **changes)


def rehash(event: AuditEvent) -> AuditEvent:
    """What an attacker without the key can do: recompute the hash, not the hmac."""
    return edit(event, hash=event.recompute_hash())


def resign(event: AuditEvent, key: bytes) -> AuditEvent:
    fresh = rehash(event)
    return edit(fresh, hmac=sign(key, fresh.hash))


# -- encoding --------------------------------------------------------------------------


def test_ts_is_rfc3339_utc_milliseconds() -> None:
    assert format_ts(T0) == "2026-11-21T08:00:00.123Z"
    plus2 = timezone(timedelta(hours=2))
    assert format_ts(datetime(2026, 11, 21, 10, 0, 0, 5000, tzinfo=plus2)) == "2026-11-21T08:00:00.005Z"
    with pytest.raises(AssertionError):
        format_ts(datetime(2026, 11, 21, 8, 0, 0))  # naive: refused


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def test_golden_hash_vector() -> None:
    """Pinned so another implementation (or a refactor) can prove it hashes the same bytes;
    the same vector is in docs/specs/audit.md."""
    digest = event_hash(
        seq=1,
        id="00000000-0000-4000-8000-000000000000",
        ts=datetime(2026, 11, 21, 8, 0, 0, 123000, tzinfo=UTC),
        actor="admin:alice",
        action="approve_market",
        target="US-CPI-2026-12",
        payload={"reason": "ok"},
        job_id=None,
        prev_hash=GENESIS_HASH,
    )
    assert digest == "48679e81c4dae8d01e089f64fc76e722f1f8708afc99a1144c6aa4a23b5bb6da"
    assert sign(b"k" * 16, digest) == "1f4685cb5362ab7eae1647e4d44d0cca07f998d814a494939bac9e81aa3c94fe"


def test_seal_chains_and_truncates_to_milliseconds() -> None:
    events, head = build(3)
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[0].ts.microsecond == 123000
    assert head == Checkpoint(3, events[2].hash, sign_head(KEY, 3, events[2].hash))
    assert events[0].to_dict()["ts"] == "2026-11-21T08:00:00.123Z"
    assert set(events[0].to_dict()) == {
        "id", "seq", "ts", "actor", "action", "target", "payload", "job_id", "prev_hash", "hash", "hmac"
    }  # fmt: skip


@pytest.mark.parametrize("bad", [1.5, {"x": 1.0}, [float("nan")], {1: "int key"}, "nul\x00", object()])
def test_payloads_that_would_not_round_trip_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        seal(KEY, prev=None, id="i", ts=T0, actor="a", action="b", target="c", payload={"v": bad})


def test_module_is_pure_standard_library() -> None:
    tree = ast.parse(Path(chain.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
    assert not imported & {"random", "time", "logging", "os", "socket", "uuid"}


# -- verification: the good cases ------------------------------------------------------


def test_intact_chain_verifies() -> None:
    events, head = build(5)
    report = verify_chain(events, KEY, head)
    assert report.ok
    assert report.events == 5
    assert report.head_hash == events[-1].hash
    assert report.first_bad_seq is None and report.problem is None


def test_empty_log_with_genesis_head_verifies() -> None:
    report = verify_chain([], KEY, Checkpoint(0, GENESIS_HASH, ""))
    assert report.ok
    assert report.events == 0
    assert report.head_hash == GENESIS_HASH


def test_wrong_key_fails_at_the_first_event() -> None:
    events, head = build(3)
    report = verify_chain(events, OTHER_KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.HMAC_MISMATCH, 1)


# -- verification: one test per tamper kind --------------------------------------------


def test_edited_payload_without_new_hash_is_a_hash_mismatch() -> None:
    events, head = build(5)
    events[2] = edit(events[2], payload={**events[2].payload, "reason": "changed"})
    report = verify_chain(events, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.HASH_MISMATCH, 3)
    assert report.events == 2
    assert report.head_hash == events[1].hash


@pytest.mark.parametrize("field", ["ts", "actor", "action", "target", "job_id", "id"])
def test_every_hashed_field_is_covered(field: str) -> None:
    events, head = build(3)
    value: Any = T0 + timedelta(days=1) if field == "ts" else "forged"
    events[1] = edit(events[1], **{field: value})
    report = verify_chain(events, KEY, head)
    assert (report.problem, report.first_bad_seq) == (chain.HASH_MISMATCH, 2)


def test_edited_payload_with_new_hash_is_an_hmac_mismatch() -> None:
    events, head = build(5)
    events[2] = rehash(edit(events[2], payload={"reason": "changed"}))
    report = verify_chain(events, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.HMAC_MISMATCH, 3)


def test_edited_event_resigned_with_another_key_is_an_hmac_mismatch() -> None:
    events, head = build(5)
    events[2] = resign(edit(events[2], payload={"reason": "changed"}), OTHER_KEY)
    report = verify_chain(events, KEY, head)
    assert (report.problem, report.first_bad_seq) == (chain.HMAC_MISMATCH, 3)


def test_edit_that_rewrites_the_rest_of_the_chain_still_needs_the_key() -> None:
    """Recompute every later hash and prev_hash: the chain links again, the hmacs do not."""
    events, head = build(5)
    events[2] = rehash(edit(events[2], payload={"reason": "changed"}))
    for i in range(3, 5):
        events[i] = rehash(edit(events[i], prev_hash=events[i - 1].hash))
    report = verify_chain(events, KEY, head)
    assert (report.problem, report.first_bad_seq) == (chain.HMAC_MISMATCH, 3)


def test_removed_event_is_a_seq_gap() -> None:
    events, head = build(5)
    del events[2]
    report = verify_chain(events, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.SEQ_MISMATCH, 3)


def test_removed_event_with_renumbered_seqs_breaks_the_links() -> None:
    events, head = build(5)
    del events[2]
    events[2:] = [edit(e, seq=e.seq - 1) for e in events[2:]]
    report = verify_chain(events, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.PREV_HASH_MISMATCH, 3)


def test_inserted_event_without_the_key_is_an_hmac_mismatch() -> None:
    """A forged event slotted in at seq 3, linked correctly, later events renumbered and relinked."""
    events, head = build(5)
    forged, _ = seal(
        OTHER_KEY,
        prev=Checkpoint(2, events[1].hash, ""),
        id="forged",
        ts=T0,
        actor="admin:mallory",
        action="resolve_market",
        target="US-CPI-2",
        payload={},
    )
    rest = [edit(e, seq=e.seq + 1) for e in events[2:]]
    tampered = [*events[:2], forged, *rest]
    for i in range(3, len(tampered)):
        tampered[i] = rehash(edit(tampered[i], prev_hash=tampered[i - 1].hash))
    report = verify_chain(tampered, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.HMAC_MISMATCH, 3)


def test_inserted_event_with_a_duplicate_seq_is_caught() -> None:
    events, head = build(4)
    tampered = [*events[:2], events[1], *events[2:]]  # a replayed copy of event 2
    report = verify_chain(tampered, KEY, head)
    assert (report.problem, report.first_bad_seq) == (chain.SEQ_MISMATCH, 3)


def test_reordered_events_are_caught() -> None:
    events, head = build(5)
    events[1], events[2] = events[2], events[1]
    report = verify_chain(events, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.SEQ_MISMATCH, 2)


def test_swapped_seqs_are_a_hash_mismatch() -> None:
    """Swap the seq values of two rows (so reading by seq yields the new order)."""
    events, head = build(5)
    a, b = events[1], events[2]
    events[1], events[2] = edit(b, seq=2), edit(a, seq=3)
    report = verify_chain(events, KEY, head)
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert report.problem in (chain.PREV_HASH_MISMATCH, chain.HASH_MISMATCH)


def test_removed_tail_is_invisible_to_the_chain_but_not_to_the_head() -> None:
    events, head = build(5)
    cut = events[:3]
    assert verify_chain(cut, KEY, check_head=False).ok  # why the signed head exists
    report = verify_chain(cut, KEY, head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.HEAD_MISMATCH, 4)
    assert report.events == 3


def test_removed_tail_with_a_head_copied_from_an_event_is_caught() -> None:
    """The attacker points the head at event 3 and reuses event 3's own hmac."""
    events, _ = build(5)
    forged_head = Checkpoint(3, events[2].hash, events[2].hmac)
    report = verify_chain(events[:3], KEY, forged_head)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.HEAD_HMAC_MISMATCH, 3)


def test_everything_removed_with_genesis_head_needs_an_anchor() -> None:
    events, _ = build(3)
    genesis = Checkpoint(0, GENESIS_HASH, "")
    assert verify_chain([], KEY, genesis).ok  # nothing inside the log can tell
    report = verify_chain([], KEY, genesis, anchors={3: events[2].hash})
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.ANCHOR_MISMATCH, 3)


def test_rollback_to_an_old_signed_state_needs_an_anchor() -> None:
    """Truncate back to seq 3 and restore the head saved at that time: all validly signed."""
    events, _ = build(5)
    old_events, old_head = events[:3], Checkpoint(3, events[2].hash, sign_head(KEY, 3, events[2].hash))
    assert verify_chain(old_events, KEY, old_head).ok
    report = verify_chain(old_events, KEY, old_head, anchors={5: events[4].hash})
    assert (report.ok, report.problem, report.first_bad_seq) == (False, chain.ANCHOR_MISMATCH, 5)
    assert verify_chain(events, KEY, build(5)[1], anchors={5: events[4].hash}).ok


def test_rewritten_history_that_differs_from_an_anchor_is_caught() -> None:
    """With the key (an insider), history can be re-signed; an anchor still catches it."""
    events, _ = build(4)
    rewritten, rewritten_head = build(4, key=KEY)
    rewritten[1] = resign(edit(rewritten[1], payload={"reason": "rewritten"}), KEY)
    for i in range(2, 4):
        rewritten[i] = resign(edit(rewritten[i], prev_hash=rewritten[i - 1].hash), KEY)
    rewritten_head = Checkpoint(4, rewritten[3].hash, sign_head(KEY, 4, rewritten[3].hash))
    assert verify_chain(rewritten, KEY, rewritten_head).ok
    report = verify_chain(rewritten, KEY, rewritten_head, anchors={2: events[1].hash})
    assert (report.problem, report.first_bad_seq) == (chain.ANCHOR_MISMATCH, 2)


def test_head_ahead_of_the_chain_is_caught() -> None:
    events, head = build(3)
    report = verify_chain(events[:3], KEY, Checkpoint(4, "f" * 64, "0" * 64))
    assert (report.problem, report.first_bad_seq) == (chain.HEAD_MISMATCH, 4)
    assert verify_chain(events, KEY, head).ok


def test_missing_head_is_caught() -> None:
    events, _ = build(2)
    report = verify_chain(events, KEY, None)
    assert (report.ok, report.problem) == (False, chain.HEAD_MISSING)
