"""A user's watchlist and price-threshold alerts (docs/specs/search.md).

The problem: a user keeps an eye on some markets and wants a notice on their private channel
`agent:{user_id}` when one trades through a price. Both are per-user lists with a hard cap
("a limit on everything"): 200 watched markets, 50 active alerts. The cap is checked under a
per-user transaction-scoped advisory lock, so two concurrent adds cannot both take the last
slot. Only publicly visible markets (not requested or rejected) can be watched or alerted on;
anything else is 404 `unknown_market`, the same answer as a symbol that does not exist.

Firing and delivery happen elsewhere (functions/alerts.py); here an alert is only created,
listed and deleted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from emlib.db import Conn
from emlib.problems import ProblemError
from functions.alerts import MAX_ACTIVE_ALERTS_PER_USER, Direction
from functions.auth import CurrentUser
from functions.deps import ResourcesDep
from functions.routers.search import MARKET_COLUMNS, PUBLIC_STATUSES, MarketItem

router = APIRouter(tags=["watchlists"])

WATCHLIST_MAX = 200
SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9-]{0,31}$"
ALERT_ID_PATTERN = r"^al-[0-9a-f]{32}$"
# Alerts can still fire while a market can trade (or is halted and may reopen).
ALERTABLE_STATUSES = ("approved", "open", "halted")
# Advisory lock namespaces (the two-int form: namespace, hash of the user id).
_LOCK_WATCHLIST = 0x574C  # "WL"
_LOCK_ALERTS = 0x414C  # "AL"

SymbolPath = Annotated[str, Path(pattern=SYMBOL_PATTERN)]


def _lock_user(conn: Conn, namespace: int, user_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (namespace, user_id))


def _public_market(conn: Conn, symbol: str) -> dict[str, Any]:
    cur = conn.execute(
        f"SELECT {', '.join(MARKET_COLUMNS)} FROM markets WHERE symbol = %s AND status = ANY(%s)",
        (symbol, list(PUBLIC_STATUSES)),
    )
    row = cur.fetchone()
    if row is None:
        raise ProblemError(404, "unknown_market", f"no market {symbol}")
    return dict(zip([d.name for d in cur.description or ()], row, strict=True))


# --- watchlist ---------------------------------------------------------------------------


class WatchlistItem(MarketItem):
    added_at: datetime


class Watchlist(BaseModel):
    items: list[WatchlistItem]
    limit: int


@router.put(
    "/api/v1/watchlist/{symbol}",
    response_model=WatchlistItem,
    responses={200: {"description": "already on the watchlist"}, 201: {"description": "added"}},
)
def watch(
    symbol: SymbolPath, user: CurrentUser, resources: ResourcesDep, response: Response
) -> WatchlistItem:
    """Add a market (idempotent: 201 when added, 200 when it was already there)."""
    with resources.pool.connection() as conn, conn.transaction():
        market = _public_market(conn, symbol)
        _lock_user(conn, _LOCK_WATCHLIST, user.user_id)
        existing = conn.execute(
            "SELECT created_at FROM watchlist_items WHERE user_id = %s AND symbol = %s",
            (user.user_id, symbol),
        ).fetchone()
        if existing is not None:
            response.status_code = 200
            return WatchlistItem(**market, added_at=existing[0])
        count_row = conn.execute(
            "SELECT count(*) FROM watchlist_items WHERE user_id = %s", (user.user_id,)
        ).fetchone()
        assert count_row is not None
        if count_row[0] >= WATCHLIST_MAX:
            raise ProblemError(
                409,
                "watchlist_full",
                f"a watchlist holds at most {WATCHLIST_MAX} markets",
                extra={"limit": WATCHLIST_MAX},
            )
        added = conn.execute(
            "INSERT INTO watchlist_items (user_id, symbol) VALUES (%s, %s) RETURNING created_at",
            (user.user_id, symbol),
        ).fetchone()
        assert added is not None
    response.status_code = 201
    return WatchlistItem(**market, added_at=added[0])


@router.delete("/api/v1/watchlist/{symbol}", status_code=204)
def unwatch(symbol: SymbolPath, user: CurrentUser, resources: ResourcesDep) -> Response:
    """Remove a market (idempotent: 204 whether or not it was listed)."""
    with resources.pool.connection() as conn:
        conn.execute("DELETE FROM watchlist_items WHERE user_id = %s AND symbol = %s", (user.user_id, symbol))
    return Response(status_code=204)


@router.get("/api/v1/watchlist", response_model=Watchlist)
def watchlist(user: CurrentUser, resources: ResourcesDep) -> Watchlist:
    """Every watched market, most recently added first (at most 200: no pagination)."""
    columns = ", ".join(f"m.{c}" for c in MARKET_COLUMNS)
    with resources.pool.connection() as conn:
        cur = conn.execute(
            f"SELECT {columns}, w.created_at AS added_at FROM watchlist_items w"
            " JOIN markets m ON m.symbol = w.symbol WHERE w.user_id = %s"
            " ORDER BY w.created_at DESC, w.symbol",
            (user.user_id,),
        )
        names = [d.name for d in cur.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return Watchlist(items=[WatchlistItem.model_validate(r) for r in rows], limit=WATCHLIST_MAX)


# --- alerts ------------------------------------------------------------------------------


class AlertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(pattern=SYMBOL_PATTERN)
    direction: Direction
    # integer ticks; strict so 42.0 or "42" are refused rather than coerced
    price: int = Field(strict=True)


class AlertOut(BaseModel):
    id: str
    symbol: str
    direction: Direction
    price: int
    status: Literal["active", "triggered"]
    created_at: datetime
    triggered_at: datetime | None
    trigger_price: int | None
    trigger_trade_id: int | None
    delivered_at: datetime | None


class AlertList(BaseModel):
    items: list[AlertOut]
    active_limit: int


_ALERT_COLUMNS = (
    "id, symbol, direction, price_ticks, created_at, triggered_at, trigger_price_ticks,"
    " trigger_trade_id, delivered_at"
)


def _alert(row: tuple[Any, ...]) -> AlertOut:
    alert_id, symbol, direction, price, created_at, triggered_at, trigger_price, trade_id, delivered = row
    return AlertOut(
        id=alert_id,
        symbol=symbol,
        direction=direction,
        price=price,
        status="active" if triggered_at is None else "triggered",
        created_at=created_at,
        triggered_at=triggered_at,
        trigger_price=trigger_price,
        trigger_trade_id=trade_id,
        delivered_at=delivered,
    )


@router.post("/api/v1/alerts", status_code=201, response_model=AlertOut)
def create_alert(body: AlertRequest, user: CurrentUser, resources: ResourcesDep) -> AlertOut:
    with resources.pool.connection() as conn, conn.transaction():
        market = _public_market(conn, body.symbol)
        if market["status"] not in ALERTABLE_STATUSES:
            raise ProblemError(
                409,
                "market_not_tradable",
                f"market {body.symbol} is {market['status']}: it will not trade again",
            )
        price_min, price_max, tick = market["price_min"], market["price_max"], market["tick_size"]
        if not price_min <= body.price <= price_max or (body.price - price_min) % tick != 0:
            raise ProblemError(
                422,
                "invalid_price",
                f"price must be within [{price_min}, {price_max}] on a tick of {tick}",
                extra={"price_min": price_min, "price_max": price_max, "tick_size": tick},
            )
        _lock_user(conn, _LOCK_ALERTS, user.user_id)
        count_row = conn.execute(
            "SELECT count(*) FROM price_alerts WHERE user_id = %s AND triggered_at IS NULL", (user.user_id,)
        ).fetchone()
        assert count_row is not None
        if count_row[0] >= MAX_ACTIVE_ALERTS_PER_USER:
            raise ProblemError(
                409,
                "alerts_full",
                f"at most {MAX_ACTIVE_ALERTS_PER_USER} active alerts per user",
                extra={"limit": MAX_ACTIVE_ALERTS_PER_USER},
            )
        row = conn.execute(
            "INSERT INTO price_alerts (id, user_id, symbol, direction, price_ticks)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_ALERT_COLUMNS}",
            ("al-" + uuid.uuid4().hex, user.user_id, body.symbol, body.direction, body.price),
        ).fetchone()
        assert row is not None
    return _alert(row)


@router.get("/api/v1/alerts", response_model=AlertList)
def list_alerts(
    user: CurrentUser,
    resources: ResourcesDep,
    status: Annotated[Literal["active", "triggered"] | None, Query()] = None,
) -> AlertList:
    """The caller's alerts, newest first (at most 250: 50 active and the latest triggered)."""
    where = "user_id = %s"
    if status == "active":
        where += " AND triggered_at IS NULL"
    elif status == "triggered":
        where += " AND triggered_at IS NOT NULL"
    with resources.pool.connection() as conn:
        rows = conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM price_alerts WHERE {where} ORDER BY created_at DESC, id LIMIT %s",
            (user.user_id, MAX_ACTIVE_ALERTS_PER_USER + 200),
        ).fetchall()
    return AlertList(items=[_alert(r) for r in rows], active_limit=MAX_ACTIVE_ALERTS_PER_USER)


@router.delete("/api/v1/alerts/{alert_id}", status_code=204)
def delete_alert(
    alert_id: Annotated[str, Path(pattern=ALERT_ID_PATTERN)], user: CurrentUser, resources: ResourcesDep
) -> Response:
    """Delete one of the caller's alerts; another user's alert is `unknown_alert` like a
    missing one (its existence is not revealed)."""
    with resources.pool.connection() as conn:
        row = conn.execute(
            "DELETE FROM price_alerts WHERE id = %s AND user_id = %s RETURNING id", (alert_id, user.user_id)
        ).fetchone()
    if row is None:
        raise ProblemError(404, "unknown_alert", f"no alert {alert_id}")
    return Response(status_code=204)
