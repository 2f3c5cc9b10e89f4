"""Markets: the lifecycle rules and the PostgreSQL storage behind requests, admin actions and reads.

Problem: a market must not exist, open or pay out without a human admin's signed decision
(design.md §3 "Governance"), and its story (who asked, who approved, every status change and
why) must be readable later. This module holds

- the rules, as plain data and functions with no I/O: which admin action moves a market
  from which statuses to which (`TRANSITIONS`), how many distinct admins must approve
  (`required_approvals`: two for `political`), the price-grid check for a requested market
  (`bounds_problem`), and the title-overlap test for duplicate flagging (`titles_overlap`);
- the storage, as functions that take the caller's connection so a route can put the market
  change, its timeline row and its audit event in one transaction.

Tables (migration 0006): `markets`, `market_approvals` (one row per admin per market),
`market_events` (the timeline). `markets.volume` and `markets.last_trade_at` belong to the
read-model projector; `markets.search_vector` is generated for the search router.
Result codes and the ordering between the host call and the commit: docs/specs/admin_actions.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import Connection
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import Jsonb

Conn = Connection[TupleRow]

# ---------------------------------------------------------------------------- rules

SYMBOL_PATTERN: Final = r"^[A-Z0-9][A-Z0-9-]{0,31}$"
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)
MARKET_TYPES: Final = ("political", "economic", "social", "technology", "finance", "culture", "sports")
RISK_LEVELS: Final = ("low", "medium", "high")
KINDS: Final = ("binary", "scalar")
STATUSES: Final = ("requested", "approved", "open", "halted", "closed", "resolved", "settled", "rejected")
PRICE_MAX: Final = 1_000_000_000
# Binary contracts trade at 1..99 on a tick of 1 and settle at 0 or 100 (design.md §5).
BINARY_GRID: Final = (1, 1, 99)
BINARY_SETTLEMENTS: Final = (0, 100)

# A user may have this many requests waiting for a decision at once ("a limit on everything").
PENDING_REQUESTS_MAX: Final = 20
# Titles sharing at least this fraction of their English lexemes (Jaccard) are flagged.
OVERLAP_NUM: Final = 3
OVERLAP_DEN: Final = 5
DUPLICATES_MAX: Final = 10


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[str]
    target: str
    event: str  # the timeline event name


TRANSITIONS: Final[dict[str, Transition]] = {
    "approve_market": Transition(frozenset({"requested"}), "approved", "approved"),
    "reject_market": Transition(frozenset({"requested"}), "rejected", "rejected"),
    "open_market": Transition(frozenset({"approved", "halted"}), "open", "opened"),
    "halt_market": Transition(frozenset({"open"}), "halted", "halted"),
    "close_market": Transition(frozenset({"open", "halted"}), "closed", "closed"),
    # Resolution decides the price (`resolved`) and the host pays out at once (`settled`):
    # both timeline rows are written in one transaction; the stored status ends `settled`.
    "resolve_market": Transition(frozenset({"closed"}), "settled", "settled"),
}
MARKET_ACTIONS: Final = tuple(TRANSITIONS)

# What the host calls each status it knows (it has no requested/approved/resolved/rejected).
HOST_STATUS: Final[dict[str, str]] = {
    "approved": "halted",
    "open": "open",
    "halted": "halted",
    "closed": "closed",
}


def is_symbol(text: str) -> bool:
    return _SYMBOL_RE.fullmatch(text) is not None


def required_approvals(market_type: str) -> int:
    """Political markets need two different admins; every other type needs one."""
    return 2 if market_type == "political" else 1


def transition_allowed(action: str, status: str) -> bool:
    return status in TRANSITIONS[action].sources


def bounds_problem(kind: str, tick_size: int, price_min: int, price_max: int) -> str | None:
    """Why a price grid is unusable, or None. Mirrors the host's own check (so a market the
    API accepts is one the host will create)."""
    if kind == "binary":
        if (tick_size, price_min, price_max) != BINARY_GRID:
            return "a binary market trades on 1..99 with tick 1; leave tick_size/price_min/price_max out"
        return None
    if tick_size < 1:
        return "tick_size must be at least 1"
    if not 0 <= price_min < price_max <= PRICE_MAX:
        return f"need 0 <= price_min < price_max <= {PRICE_MAX}"
    if (price_max - price_min) % tick_size != 0:
        return "price_max - price_min must be a whole number of ticks"
    return None


def settlement_problem(kind: str, tick_size: int, price_min: int, price_max: int, price: int) -> str | None:
    if kind == "binary":
        return None if price in BINARY_SETTLEMENTS else "a binary market settles at 0 or 100"
    if not price_min <= price <= price_max or (price - price_min) % tick_size != 0:
        return f"settlement_price must be on the grid {price_min}..{price_max} step {tick_size}"
    return None


def titles_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when two titles' lexeme sets share at least OVERLAP_NUM/OVERLAP_DEN of their union."""
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return union > 0 and OVERLAP_DEN * len(sa & sb) >= OVERLAP_NUM * union


def encode_cursor(created_at: datetime, symbol: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{symbol}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, symbol = raw.split("|", 1)
        created_at = datetime.fromisoformat(ts)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (created_at, symbol) if is_symbol(symbol) and created_at.tzinfo is not None else None


# ---------------------------------------------------------------------------- storage

MARKET_COLUMNS: Final = (
    "symbol, title, description, type, subtype, region, risk_level, kind, tick_size, price_min, "
    "price_max, multiplier_minor, status, created_by, human_approval_audit_id, sources, "
    "resolution_criteria, settlement_price, possible_duplicate_of, volume, last_trade_at, "
    "created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class NewMarket:
    symbol: str
    title: str
    description: str
    type: str
    subtype: str
    region: str
    kind: str
    tick_size: int
    price_min: int
    price_max: int
    sources: list[str]
    resolution_criteria: str


def get_market(conn: Conn, symbol: str, *, for_update: bool = False) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {MARKET_COLUMNS} FROM markets WHERE symbol = %s{lock}", (symbol,)
        ).fetchone()


def find_duplicates(conn: Conn, title: str) -> list[str]:
    """Symbols of live (not rejected) markets whose title normalises to the same text or
    shares most of its English lexemes with `title`. Candidates come from the GIN index on
    `title_lexemes` (any lexeme in common); the overlap test runs here."""
    rows = conn.execute(
        "WITH q AS (SELECT btrim(regexp_replace(lower(%s), '[^[:alnum:]]+', ' ', 'g')) AS norm,"
        "                  tsvector_to_array(to_tsvector('english'::regconfig, %s)) AS lexemes)"
        " SELECT m.symbol, m.title_norm = q.norm, m.title_lexemes, q.lexemes FROM markets m, q"
        " WHERE m.status <> 'rejected' AND (m.title_norm = q.norm OR m.title_lexemes && q.lexemes)"
        " ORDER BY m.created_at, m.symbol LIMIT 500",
        (title, title),
    ).fetchall()
    found = [sym for sym, same, theirs, ours in rows if same or titles_overlap(theirs, ours)]
    return found[:DUPLICATES_MAX]


def pending_requests(conn: Conn, user_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM markets WHERE created_by = %s AND status = 'requested'", (user_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_request(conn: Conn, new: NewMarket, created_by: str, duplicates: list[str]) -> bool:
    """Insert a requested market and its first timeline row; False when the symbol is taken."""
    row = conn.execute(
        "INSERT INTO markets (symbol, title, description, type, subtype, region, kind, tick_size,"
        " price_min, price_max, created_by, sources, resolution_criteria, possible_duplicate_of)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (symbol) DO NOTHING RETURNING symbol",
        (
            new.symbol,
            new.title,
            new.description,
            new.type,
            new.subtype,
            new.region,
            new.kind,
            new.tick_size,
            new.price_min,
            new.price_max,
            created_by,
            new.sources,
            new.resolution_criteria,
            duplicates,
        ),
    ).fetchone()
    if row is None:
        return False
    add_event(conn, new.symbol, "requested", None, "requested", created_by, "", None, {})
    return True


def add_event(
    conn: Conn,
    symbol: str,
    event: str,
    from_status: str | None,
    to_status: str,
    actor: str,
    reason: str,
    audit_event_id: str | None,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO market_events (symbol, event, from_status, to_status, actor, reason,"
        " audit_event_id, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (symbol, event, from_status, to_status, actor, reason, audit_event_id, Jsonb(detail)),
    )


def add_approval(
    conn: Conn, symbol: str, admin_id: str, audit_event_id: str, risk_level: str, params: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO market_approvals (symbol, admin_id, audit_event_id, risk_level, params)"
        " VALUES (%s, %s, %s, %s, %s)",
        (symbol, admin_id, audit_event_id, risk_level, Jsonb(params)),
    )


def approvals(conn: Conn, symbol: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT admin_id, audit_event_id, risk_level, params, ts FROM market_approvals"
            " WHERE symbol = %s ORDER BY ts, admin_id",
            (symbol,),
        ).fetchall()


def set_status(conn: Conn, symbol: str, status: str, **fields: Any) -> None:
    """Move a market to `status`, setting any of the approval/grid/settlement fields given."""
    allowed = {
        "risk_level",
        "human_approval_audit_id",
        "tick_size",
        "price_min",
        "price_max",
        "multiplier_minor",
        "settlement_price",
    }
    assert set(fields) <= allowed, f"unexpected fields {set(fields) - allowed}"
    names = ["status", *fields]
    assignments = ", ".join(f"{name} = %s" for name in names)
    conn.execute(
        f"UPDATE markets SET {assignments}, updated_at = now() WHERE symbol = %s",
        (status, *fields.values(), symbol),
    )


def timeline(conn: Conn, symbol: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id AS seq, event, from_status, to_status, actor, reason, audit_event_id, detail, ts"
            " FROM market_events WHERE symbol = %s ORDER BY id",
            (symbol,),
        ).fetchall()


def list_markets(
    conn: Conn, *, status: str | None, market_type: str | None, limit: int, after: tuple[datetime, str] | None
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated on (created_at, symbol)."""
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append("status = %s")
        args.append(status)
    if market_type is not None:
        where.append("type = %s")
        args.append(market_type)
    if after is not None:
        where.append("(created_at, symbol) < (%s, %s)")
        args.extend(after)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {MARKET_COLUMNS} FROM markets{clause} ORDER BY created_at DESC, symbol DESC LIMIT %s",
            (*args, limit),
        ).fetchall()
