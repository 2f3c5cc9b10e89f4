"""The pure core of the audit log: canonical encoding, hash chain, HMAC, verification.

Problem: admins change what the market is (approve, resolve, halt). Anyone later must be
able to prove that the record of those changes was not edited, cut or rearranged, even
by someone with write access to the database. Each event carries

    hash = sha256_hex(canonical(seq, id, ts, actor, action, target, payload, job_id, prev_hash))
    hmac = HMAC-SHA256(AUDIT_HMAC_KEY, hash)          (hex; the key never enters the DB)

and `prev_hash` is the previous event's `hash` (64 zeros before the first event). A signed
head checkpoint `(seq, hash, head_hmac)` records where the chain ended, so a removed tail
shows too. `canonical` is JSON with sorted keys, no spaces, `ensure_ascii=False`, UTF-8,
with `ts` as RFC 3339 UTC to the millisecond (`2026-11-21T08:00:00.123Z`).

Standard library only: no clock, randomness or I/O. Time and ids come in as arguments.
The database side lives in `emlib.audit`; the byte layout is in docs/specs/audit.md.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64
HEAD_DOMAIN = b"em-audit-head-v1|"
"""Head signatures are domain-separated from event signatures: an event's hmac cannot be
copied into the head to make a cut-off chain look complete."""

# Result codes of verification (each explained in docs/specs/audit.md).
SEQ_MISMATCH = "seq_mismatch"
PREV_HASH_MISMATCH = "prev_hash_mismatch"
HASH_MISMATCH = "hash_mismatch"
HMAC_MISMATCH = "hmac_mismatch"
HEAD_MISSING = "head_missing"
HEAD_MISMATCH = "head_mismatch"
HEAD_HMAC_MISMATCH = "head_hmac_mismatch"
ANCHOR_MISMATCH = "anchor_mismatch"


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds and `Z`; the only form of time that is hashed."""
    assert ts.tzinfo is not None, "audit timestamps must be timezone-aware"
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def truncate_ms(ts: datetime) -> datetime:
    """Drop sub-millisecond digits so the stored time formats back to the hashed string."""
    return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000)


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding that gets hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def check_payload(value: Any, *, depth: int = 0) -> None:
    """Refuse what would not survive a jsonb round trip byte-for-byte.

    Floats are refused (jsonb may print `1e2` back as `100`, changing the hash; money and
    prices are integers anyway), as are non-string keys and NUL characters.
    """
    if depth > 32:
        raise ValueError("audit payload nested too deeply")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("audit payload strings may not contain NUL")
        return
    if isinstance(value, list):
        for item in value:
            check_payload(item, depth=depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("audit payload keys must be strings")
            check_payload(key, depth=depth + 1)
            check_payload(item, depth=depth + 1)
        return
    raise ValueError(
        f"audit payload may hold only null, bool, int, str, list, object; got {type(value).__name__}"
    )


def event_hash(
    *,
    seq: int,
    id: str,
    ts: datetime,
    actor: str,
    action: str,
    target: str,
    payload: Mapping[str, Any],
    job_id: str | None,
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "id": id,
        "ts": format_ts(ts),
        "actor": actor,
        "action": action,
        "target": target,
        "payload": payload,
        "job_id": job_id,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def sign(key: bytes, hash_hex: str) -> str:
    return _hmac.new(key, hash_hex.encode("ascii"), hashlib.sha256).hexdigest()


def sign_head(key: bytes, seq: int, hash_hex: str) -> str:
    return _hmac.new(key, HEAD_DOMAIN + f"{seq}|{hash_hex}".encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    id: str
    seq: int
    ts: datetime
    actor: str
    action: str
    target: str
    payload: dict[str, Any]
    job_id: str | None
    prev_hash: str
    hash: str
    hmac: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form (contract.md, Admin)."""
        return {
            "id": self.id,
            "seq": self.seq,
            "ts": format_ts(self.ts),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "payload": self.payload,
            "job_id": self.job_id,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "hmac": self.hmac,
        }

    def recompute_hash(self) -> str:
        return event_hash(
            seq=self.seq,
            id=self.id,
            ts=self.ts,
            actor=self.actor,
            action=self.action,
            target=self.target,
            payload=self.payload,
            job_id=self.job_id,
            prev_hash=self.prev_hash,
        )


@dataclass(frozen=True)
class Checkpoint:
    """Where the chain ends: the head row, signed with `sign_head`."""

    seq: int
    hash: str
    hmac: str


def seal(
    key: bytes,
    *,
    prev: Checkpoint | None,
    id: str,
    ts: datetime,
    actor: str,
    action: str,
    target: str,
    payload: dict[str, Any],
    job_id: str | None = None,
) -> tuple[AuditEvent, Checkpoint]:
    """Build the next event after `prev` (None = genesis) and the head that follows it."""
    assert actor and action and target, "actor, action and target are required"
    check_payload(payload)
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    ts = truncate_ms(ts)
    digest = event_hash(
        seq=seq,
        id=id,
        ts=ts,
        actor=actor,
        action=action,
        target=target,
        payload=payload,
        job_id=job_id,
        prev_hash=prev_hash,
    )
    event = AuditEvent(
        id, seq, ts, actor, action, target, payload, job_id, prev_hash, digest, sign(key, digest)
    )
    return event, Checkpoint(seq, digest, sign_head(key, seq, digest))


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    events: int
    """How many events were checked (all of them when ok)."""
    head_hash: str
    """The hash of the last good event (GENESIS_HASH for an empty log)."""
    first_bad_seq: int | None = None
    problem: str | None = None
    """A result code (module constants), None when ok."""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "detail": self.detail,
        }


@dataclass
class ChainVerifier:
    """Checks events one at a time, in stored (seq) order, so a long log streams.

    `feed` returns False at the first bad event; `finish` then compares the head.
    """

    key: bytes
    anchors: Mapping[int, str] = field(default_factory=dict)
    """Externally recorded `{seq: hash}` pairs (e.g. a head printed last week): they catch a
    rollback to an older, validly signed state, which nothing inside the database can."""
    count: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    failure: VerifyReport | None = None

    def _fail(self, seq: int, problem: str, detail: str) -> bool:
        self.failure = VerifyReport(False, self.count, self.last_hash, seq, problem, detail)
        return False

    def feed(self, event: AuditEvent) -> bool:
        if self.failure is not None:
            return False
        expected = self.last_seq + 1
        if event.seq != expected:
            return self._fail(expected, SEQ_MISMATCH, f"expected seq {expected}, found {event.seq}")
        if event.prev_hash != self.last_hash:
            return self._fail(
                event.seq, PREV_HASH_MISMATCH, "prev_hash does not match the previous event's hash"
            )
        if event.recompute_hash() != event.hash:
            return self._fail(event.seq, HASH_MISMATCH, "event fields do not match its hash")
        if not _hmac.compare_digest(sign(self.key, event.hash), event.hmac):
            return self._fail(event.seq, HMAC_MISMATCH, "hmac is not valid for this key")
        anchored = self.anchors.get(event.seq)
        if anchored is not None and anchored != event.hash:
            return self._fail(event.seq, ANCHOR_MISMATCH, "hash differs from the recorded anchor")
        self.count += 1
        self.last_seq = event.seq
        self.last_hash = event.hash
        return True

    def finish(self, head: Checkpoint | None) -> VerifyReport:
        if self.failure is not None:
            return self.failure
        missing = [seq for seq in self.anchors if seq > self.last_seq]
        if missing:
            return self._report_fail(min(missing), ANCHOR_MISMATCH, "an anchored event is missing")
        if head is None:
            return self._report_fail(self.last_seq + 1, HEAD_MISSING, "no head checkpoint")
        if head.seq != self.last_seq or head.hash != self.last_hash:
            # The chain ends before (removed tail) or after (unsigned append) the head.
            return self._report_fail(
                min(head.seq, self.last_seq) + 1,
                HEAD_MISMATCH,
                f"head says seq {head.seq}, chain ends at seq {self.last_seq}",
            )
        if head.seq == 0:
            if head.hash != GENESIS_HASH:
                return self._report_fail(1, HEAD_MISMATCH, "empty log with a non-genesis head")
        elif not _hmac.compare_digest(sign_head(self.key, head.seq, head.hash), head.hmac):
            return self._report_fail(head.seq, HEAD_HMAC_MISMATCH, "head hmac is not valid for this key")
        return VerifyReport(True, self.count, self.last_hash)

    def _report_fail(self, seq: int, problem: str, detail: str) -> VerifyReport:
        self._fail(seq, problem, detail)
        assert self.failure is not None
        return self.failure


def verify_chain(
    events: Iterable[AuditEvent],
    key: bytes,
    head: Checkpoint | None = None,
    *,
    check_head: bool = True,
    anchors: Mapping[int, str] | None = None,
) -> VerifyReport:
    """Verify a whole log given in stored order. With `check_head=False` the signed head is
    not consulted (then a removed tail cannot be seen: the chain alone looks complete)."""
    verifier = ChainVerifier(key, dict(anchors or {}))
    for event in events:
        if not verifier.feed(event):
            break
    if not check_head:
        return verifier.failure or VerifyReport(True, verifier.count, verifier.last_hash)
    return verifier.finish(head)
