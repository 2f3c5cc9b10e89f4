"""Market data and history reads: snapshot, trades, candles, my fills, leaderboards.

The snapshot is live: it is proxied to the orderbook host that owns the symbol (the book and
the realtime sequence live there; a client that saw a gap resyncs from it, so it must never
lag). Everything else reads the read model the projector keeps in PostgreSQL
(functions/projector.py), which trails the host by the projector's poll interval; each answer
carries `as_of_wal_seq`, the host command it is complete up to. docs/specs/read_model.md
defines the tables, the candle buckets and the leaderboard's net worth.

Pagination is keyset on `trade_id` (`before=<trade_id>`, answered with `next_before`), so trades
arriving meanwhile never shift later pages.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from emlib.problems import ProblemError
from functions import read_model as rm
from functions.auth import CurrentUser
from functions.deps import OrderbookDep, ResourcesDep
from functions.projector import DEFAULT_NAME, NET_WORTH_SQL

router = APIRouter(tags=["market data"])

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9-]{0,31}$"
Symbol = Annotated[str, Path(pattern=SYMBOL_PATTERN, description="market symbol")]
TRADES_LIMIT_MAX = 500
CANDLES_LIMIT_MAX = 5000
LEADERBOARD_LIMIT_MAX = 500
TIME_PARAM_MAX_CHARS = 40


class Snapshot(BaseModel):
    symbol: str
    status: str
    last_sequence: int
    bids: list[list[int]]
    asks: list[list[int]]
    last_trade: dict[str, Any] | None
    events: list[dict[str, Any]] | None = None


class TradeOut(BaseModel):
    trade_id: int
    symbol: str
    price: int
    quantity: int
    taker_side: Literal["buy", "sell"]
    ts: str
    ts_ms: int


class TradePage(BaseModel):
    items: list[TradeOut]
    next_before: int | None
    as_of_wal_seq: int


class CandleOut(BaseModel):
    start: str
    start_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    trade_count: int


class CandleSeries(BaseModel):
    symbol: str
    interval: Literal["1m", "1h", "1d"]
    items: list[CandleOut]
    as_of_wal_seq: int


class FillOut(BaseModel):
    trade_id: int
    symbol: str
    server_order_id: int
    side: Literal["buy", "sell"]
    price: int
    quantity: int
    liquidity: Literal["maker", "taker"]
    ts: str
    ts_ms: int


class FillPage(BaseModel):
    items: list[FillOut]
    next_before: int | None
    as_of_wal_seq: int


class LeaderboardEntry(BaseModel):
    rank: int
    account: str
    net_worth_minor: int
    change_minor: int | None = None


class Leaderboard(BaseModel):
    period: Literal["daily", "all_time"]
    day: dt.date | None = None
    items: list[LeaderboardEntry]
    as_of_wal_seq: int


def _as_of(conn: Any) -> int:
    row = conn.execute("SELECT last_wal_seq FROM rm_cursor WHERE projector = %s", (DEFAULT_NAME,)).fetchone()
    return int(row[0]) if row else 0


def parse_time_ms(value: str, name: str) -> int:
    """Unix milliseconds, or an RFC 3339 time with a zone (`2026-11-21T08:00:00Z`)."""
    text = value.strip()
    if len(text) > TIME_PARAM_MAX_CHARS:
        raise ProblemError(422, "invalid_time", f"{name}: too long")
    if text.lstrip("-").isdigit():
        ms = int(text)
    else:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ProblemError(
                422, "invalid_time", f"{name}: unix milliseconds or RFC 3339 expected"
            ) from None
        if moment.tzinfo is None:
            raise ProblemError(422, "invalid_time", f"{name}: an RFC 3339 time needs a zone (Z or +hh:mm)")
        ms = int(moment.timestamp()) * 1000 + moment.microsecond // 1000
    if not -(2**62) < ms < 2**62:
        raise ProblemError(422, "invalid_time", f"{name}: out of range")
    return ms


@router.get(
    "/api/v1/market/{symbol}/snapshot",
    response_model=Snapshot,
    response_model_exclude_unset=True,
    responses={404: {"description": "unknown_symbol"}, 410: {"description": "sequence_too_old"}},
)
def snapshot(
    symbol: Symbol,
    orderbook: OrderbookDep,
    since: Annotated[int | None, Query(ge=0, le=2**62, description="last sequence_number seen")] = None,
) -> Snapshot:
    """The book from the owning host, with the channel's envelopes after `since` when given.

    410 `sequence_too_old` (the host's replay buffer no longer reaches `since`) passes through:
    the client takes a fresh snapshot without `since`.
    """
    body = orderbook.snapshot(symbol, since)
    fields: dict[str, Any] = {
        "symbol": body["symbol"],
        "status": body["status"],
        "last_sequence": body["last_sequence"],
        "bids": body["bids"],
        "asks": body["asks"],
        "last_trade": body.get("last_trade"),
    }
    if since is not None:  # set only then, so `exclude_unset` leaves it out otherwise
        fields["events"] = body.get("events") or []
    return Snapshot(**fields)


@router.get("/api/v1/market/{symbol}/trades", response_model=TradePage)
def trades(
    symbol: Symbol,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=TRADES_LIMIT_MAX)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="next_before of the previous page")
    ] = None,
) -> TradePage:
    """The symbol's trades, newest first. Accounts are not shown (the public tape)."""
    with resources.pool.connection() as conn:
        rows = conn.execute(
            "SELECT trade_id, price, quantity, taker_side, ts_ms FROM rm_trades"
            " WHERE symbol = %s AND (%s::bigint IS NULL OR trade_id < %s) ORDER BY trade_id DESC LIMIT %s",
            (symbol, before, before, limit + 1),
        ).fetchall()
        as_of = _as_of(conn)
    items = [
        TradeOut(
            trade_id=r[0],
            symbol=symbol,
            price=r[1],
            quantity=r[2],
            taker_side=r[3],
            ts=rm.rfc3339_ms(r[4]),
            ts_ms=r[4],
        )
        for r in rows[:limit]
    ]
    next_before = items[-1].trade_id if len(rows) > limit else None
    return TradePage(items=items, next_before=next_before, as_of_wal_seq=as_of)


@router.get("/api/v1/market/{symbol}/candles", response_model=CandleSeries)
def candles(
    symbol: Symbol,
    resources: ResourcesDep,
    interval: Literal["1m", "1h", "1d"] = "1m",
    from_: Annotated[
        str | None, Query(alias="from", max_length=TIME_PARAM_MAX_CHARS, description="unix ms or RFC 3339")
    ] = None,
    to: Annotated[
        str | None, Query(max_length=TIME_PARAM_MAX_CHARS, description="unix ms or RFC 3339")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=CANDLES_LIMIT_MAX)] = 1000,
) -> CandleSeries:
    """OHLCV buckets whose start is in [from, to), oldest first (the last `limit` of them).

    Buckets are UTC-aligned; a bucket with no trade has no row (clients carry the close forward).
    """
    from_ms = parse_time_ms(from_, "from") if from_ is not None else None
    to_ms = parse_time_ms(to, "to") if to is not None else None
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise ProblemError(422, "invalid_range", "from is after to")
    with resources.pool.connection() as conn:
        rows = conn.execute(
            "SELECT bucket_start_ms, open, high, low, close, volume, trade_count FROM rm_candles"
            " WHERE symbol = %s AND interval = %s"
            " AND (%s::bigint IS NULL OR bucket_start_ms >= %s)"
            " AND (%s::bigint IS NULL OR bucket_start_ms < %s)"
            " ORDER BY bucket_start_ms DESC LIMIT %s",
            (symbol, interval, from_ms, from_ms, to_ms, to_ms, limit),
        ).fetchall()
        as_of = _as_of(conn)
    items = [
        CandleOut(
            start=rm.rfc3339_ms(r[0]),
            start_ms=r[0],
            open=r[1],
            high=r[2],
            low=r[3],
            close=r[4],
            volume=r[5],
            trade_count=r[6],
        )
        for r in reversed(rows)
    ]
    return CandleSeries(symbol=symbol, interval=interval, items=items, as_of_wal_seq=as_of)


@router.get("/api/v1/fills", response_model=FillPage)
def my_fills(
    user: CurrentUser,
    resources: ResourcesDep,
    symbol: Annotated[str | None, Query(pattern=SYMBOL_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=TRADES_LIMIT_MAX)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="next_before of the previous page")
    ] = None,
) -> FillPage:
    """The caller's own fills, newest first (the host's self-trade prevention means an account
    is on at most one side of a trade, so `trade_id` is a unique key per account)."""
    with resources.pool.connection() as conn:
        rows = conn.execute(
            "SELECT trade_id, symbol, server_order_id, side, price, quantity, liquidity, ts_ms FROM rm_fills"
            " WHERE account = %s AND (%s::text IS NULL OR symbol = %s)"
            " AND (%s::bigint IS NULL OR trade_id < %s)"
            " ORDER BY trade_id DESC LIMIT %s",
            (user.user_id, symbol, symbol, before, before, limit + 1),
        ).fetchall()
        as_of = _as_of(conn)
    items = [
        FillOut(
            trade_id=r[0],
            symbol=r[1],
            server_order_id=r[2],
            side=r[3],
            price=r[4],
            quantity=r[5],
            liquidity=r[6],
            ts=rm.rfc3339_ms(r[7]),
            ts_ms=r[7],
        )
        for r in rows[:limit]
    ]
    next_before = items[-1].trade_id if len(rows) > limit else None
    return FillPage(items=items, next_before=next_before, as_of_wal_seq=as_of)


@router.get("/api/v1/leaderboard", response_model=Leaderboard, response_model_exclude_none=True)
def leaderboard(
    resources: ResourcesDep,
    period: Literal["daily", "all_time"] = "all_time",
    limit: Annotated[int, Query(ge=1, le=LEADERBOARD_LIMIT_MAX)] = 50,
) -> Leaderboard:
    """Accounts by net worth (cash + reserved + positions marked to the last trade price), or for
    `daily` by its change since the start of the current UTC day, deposits and withdrawals
    excluded (docs/specs/read_model.md, "Leaderboard")."""
    with resources.pool.connection() as conn:
        as_of = _as_of(conn)
        if period == "all_time":
            rows = conn.execute(
                f"SELECT account, net_worth_minor, NULL FROM ({NET_WORTH_SQL}) nw"
                " ORDER BY net_worth_minor DESC, account LIMIT %s",
                (limit,),
            ).fetchall()
            day = None
        else:
            day = rm.utc_day(int(time.time() * 1000))
            rows = conn.execute(
                f"SELECT nw.account, nw.net_worth_minor, CASE WHEN d.account IS NULL THEN 0"
                f" ELSE nw.net_worth_minor - d.baseline_minor - d.flows_minor END AS change_minor"
                f" FROM ({NET_WORTH_SQL}) nw"
                " LEFT JOIN rm_networth_daily d ON d.account = nw.account AND d.day = %s"
                f" ORDER BY change_minor DESC, nw.account LIMIT %s",
                (day, limit),
            ).fetchall()
    items = [
        LeaderboardEntry(rank=n, account=r[0], net_worth_minor=r[1], change_minor=r[2])
        for n, r in enumerate(rows, start=1)
    ]
    return Leaderboard(period=period, day=day, items=items, as_of_wal_seq=as_of)
