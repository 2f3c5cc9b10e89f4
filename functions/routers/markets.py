"""Market requests and market reads.

`POST /api/v1/market-requests`: editors and above (every registered user is an editor;
`viewer` is the read-only role) ask for a market. The body is closed; the market is stored
in status `requested` and waits for an admin (`POST /api/v1/admin/action`). A symbol that
exists in any status (rejected included: symbols are never reused, the host refuses them
too) is 409 `market_exists`; a title that looks like a live market's is accepted but
flagged in `possible_duplicate_of` for the deciding admin.

`GET /api/v1/markets/{symbol}` (detail with approvals and timeline) and
`GET /api/v1/markets?status=&type=&limit=&cursor=` are public reads.
Codes: docs/specs/admin_actions.md ("Market requests").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from emlib.problems import ProblemError
from functions import markets as m
from functions.auth import EditorUser
from functions.deps import ResourcesDep

router = APIRouter(tags=["markets"])

MarketType = Literal["political", "economic", "social", "technology", "finance", "culture", "sports"]
RiskLevel = Literal["low", "medium", "high"]
Kind = Literal["binary", "scalar"]
Status = Literal["requested", "approved", "open", "halted", "closed", "resolved", "settled", "rejected"]
Symbol = Annotated[str, Field(pattern=m.SYMBOL_PATTERN)]
# Printable text: no control characters (newlines allowed in long texts).
_LINE = r"^[^\x00-\x1f\x7f]*$"
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
Url = Annotated[
    str,
    StringConstraints(
        max_length=2048, pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s\x00-\x1f\x7f]*)?$"
    ),
]
GridInt = Annotated[StrictInt, Field(ge=0, le=m.PRICE_MAX)]


class MarketRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    symbol: Symbol
    title: Annotated[str, StringConstraints(min_length=3, max_length=200, pattern=_LINE)]
    description: Annotated[str, StringConstraints(max_length=5000, pattern=_TEXT)] = ""
    type: MarketType
    subtype: Annotated[str, StringConstraints(max_length=64, pattern=_LINE)] = ""
    region: Annotated[str, StringConstraints(max_length=64, pattern=_LINE)] = ""
    kind: Kind
    # Binary markets leave these out (1, 1..99); scalar markets must give all three.
    tick_size: Annotated[StrictInt, Field(ge=1, le=m.PRICE_MAX)] | None = None
    price_min: GridInt | None = None
    price_max: GridInt | None = None
    sources: Annotated[list[Url], Field(min_length=1, max_length=10)]
    resolution_criteria: Annotated[str, StringConstraints(min_length=10, max_length=2000, pattern=_TEXT)]

    def grid(self) -> tuple[int, int, int]:
        """(tick_size, price_min, price_max), or ProblemError 422 `invalid_bounds`."""
        if self.kind == "binary":
            tick, low, high = m.BINARY_GRID
            given = (
                tick if self.tick_size is None else self.tick_size,
                low if self.price_min is None else self.price_min,
                high if self.price_max is None else self.price_max,
            )
        else:
            if self.tick_size is None or self.price_min is None or self.price_max is None:
                raise ProblemError(
                    422, "invalid_bounds", "a scalar market needs tick_size, price_min and price_max"
                )
            given = (self.tick_size, self.price_min, self.price_max)
        problem = m.bounds_problem(self.kind, *given)
        if problem is not None:
            raise ProblemError(422, "invalid_bounds", problem)
        return given


class Approval(BaseModel):
    admin_id: str
    audit_event_id: str
    risk_level: RiskLevel
    params: dict[str, Any]
    ts: datetime


class ApprovalStatus(BaseModel):
    required: int
    count: int
    approvals: list[Approval]


class TimelineEntry(BaseModel):
    seq: int
    event: str
    from_status: Status | None
    to_status: Status
    actor: str
    reason: str
    audit_event_id: str | None
    detail: dict[str, Any]
    ts: datetime


class Market(BaseModel):
    symbol: str
    title: str
    description: str
    type: MarketType
    subtype: str
    region: str
    risk_level: RiskLevel | None
    kind: Kind
    tick_size: int
    price_min: int
    price_max: int
    multiplier_minor: int
    status: Status
    created_by: str
    human_approval_audit_id: str | None
    sources: list[str]
    resolution_criteria: str
    settlement_price: int | None
    possible_duplicate_of: list[str]
    volume: int
    last_trade_at: datetime | None
    created_at: datetime
    updated_at: datetime


class MarketDetail(Market):
    approval: ApprovalStatus
    timeline: list[TimelineEntry]


class MarketList(BaseModel):
    items: list[Market]
    next_cursor: str | None


def load_detail(conn: m.Conn, symbol: str) -> MarketDetail:
    """The market with its approvals and timeline, or ProblemError 404 `unknown_market`."""
    row = m.get_market(conn, symbol)
    if row is None:
        raise ProblemError(404, "unknown_market", f"no market {symbol}")
    found = [Approval(**a) for a in m.approvals(conn, symbol)]
    return MarketDetail(
        **row,
        approval=ApprovalStatus(
            required=m.required_approvals(row["type"]), count=len(found), approvals=found
        ),
        timeline=[TimelineEntry(**e) for e in m.timeline(conn, symbol)],
    )


@router.post("/api/v1/market-requests", status_code=201, response_model=MarketDetail)
def request_market(body: MarketRequest, user: EditorUser, resources: ResourcesDep) -> MarketDetail:
    """Ask for a new market. It waits in status `requested` for an admin decision."""
    tick, low, high = body.grid()
    new = m.NewMarket(
        symbol=body.symbol,
        title=body.title,
        description=body.description,
        type=body.type,
        subtype=body.subtype,
        region=body.region,
        kind=body.kind,
        tick_size=tick,
        price_min=low,
        price_max=high,
        sources=list(body.sources),
        resolution_criteria=body.resolution_criteria,
    )
    with resources.pool.connection() as conn:
        # Serialise one user's requests so the pending cap cannot be raced past.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('market-requests:' || %s))", (user.user_id,))
        if m.pending_requests(conn, user.user_id) >= m.PENDING_REQUESTS_MAX:
            raise ProblemError(
                409,
                "too_many_pending_requests",
                f"at most {m.PENDING_REQUESTS_MAX} requests may wait for a decision at once",
            )
        duplicates = m.find_duplicates(conn, body.title)
        if not m.insert_request(conn, new, user.user_id, duplicates):
            raise ProblemError(
                409, "market_exists", f"market {body.symbol} already exists", extra={"symbol": body.symbol}
            )
        return load_detail(conn, body.symbol)


@router.get("/api/v1/markets/{symbol}", response_model=MarketDetail)
def market_detail(
    symbol: Annotated[str, Path(pattern=m.SYMBOL_PATTERN)], resources: ResourcesDep
) -> MarketDetail:
    """One market: its fields, approval status, sources and timeline."""
    with resources.pool.connection() as conn:
        return load_detail(conn, symbol)


@router.get("/api/v1/markets", response_model=MarketList)
def list_markets(
    resources: ResourcesDep,
    status: Status | None = None,
    type: MarketType | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> MarketList:
    """Markets newest first, optionally of one status and type. Search lives at /api/v1/search."""
    after = None
    if cursor is not None:
        after = m.decode_cursor(cursor)
        if after is None:
            raise ProblemError(422, "invalid_cursor", "cursor is not one this endpoint returned")
    with resources.pool.connection() as conn:
        rows = m.list_markets(conn, status=status, market_type=type, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = m.encode_cursor(rows[-1]["created_at"], rows[-1]["symbol"]) if more else None
    return MarketList(items=[Market(**r) for r in rows], next_cursor=next_cursor)
