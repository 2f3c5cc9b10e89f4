"""Orders for the signed-in caller: place, cancel, open orders, positions, P&L.

Problem: clients speak to one stateless API, while each symbol's book lives in one orderbook
host process (a shard). These routes check the caller and the request body, apply rate
limits, then forward a signed command to the host that owns the symbol and pass its answer
through: the host is the source of truth and its refusal codes reach the client unchanged
(`insufficient_funds`, `market_not_open`, ...). Nothing here changes state before the host
accepted, so a refused request leaves no trace anywhere.

Who may trade: `trader` admits role editor and above (viewers are read-only → 403
`forbidden`). It is the one place a caller becomes an account: agents' API keys plug in by
widening `trader` (any dependency returning a `Principal` whose `user_id` is the account).

Idempotency: the host remembers each account's `client_order_id`s. A retry gets 201 with the
*first* order and `"duplicate": true`; its live state comes from the host while it rests,
else from the `api_order` table (the first ack, updated by cancels made here). See
docs/specs/orders_api.md for every code.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Path, Request
from psycopg.types.json import Jsonb
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from emlib.problems import ProblemError
from emlib.resources import Resources
from functions.auth import CurrentUser, Principal, auth_config, require_role
from functions.deps import OrderbookDep, ResourcesDep
from functions.orderbook_client import OrderbookClient, OrderbookError
from functions.rate_limit import limit_by, limit_by_ip

_log = logging.getLogger("functions.orders")

router = APIRouter(tags=["orders"])

# The host's own bounds (orderbook_host/schemas.py), repeated so a bad request never travels.
SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9-]{0,31}$"
CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
QUANTITY_MAX = 1_000_000_000
PRICE_MAX = 1_000_000_000
ORDER_ID_MAX = 2**62
EXPIRE_AT_MS_MAX = 2**53

RESTING = ("open", "partially_filled")

trader = require_role("editor")
Trader = Annotated[Principal, Depends(limit_by("order:account", trader, key=lambda p: p.user_id))]
ip_limited = [Depends(limit_by_ip("order:ip"))]


# ---------------------------------------------------------------- bodies


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["US-CPI-2026-12"])]
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"] = "limit"
    price: Annotated[
        StrictInt | None,
        Field(
            ge=0, le=PRICE_MAX, description="integer ticks; limit orders (a market order's protection price)"
        ),
    ] = None
    quantity: Annotated[StrictInt, Field(ge=1, le=QUANTITY_MAX)]
    time_in_force: Literal["GTC", "IOC", "FOK", "GTD"] = "GTC"
    post_only: StrictBool = False
    client_order_id: Annotated[str | None, Field(pattern=CLIENT_ORDER_ID_PATTERN)] = None
    expire_at: Annotated[
        AwareDatetime | None, Field(description="GTD only: RFC 3339 time the order expires")
    ] = None


class Fill(BaseModel):
    trade_id: int
    price: int
    quantity: int
    liquidity: Literal["maker", "taker"]


class OrderOut(BaseModel):
    server_order_id: int
    client_order_id: str | None
    status: str = Field(description="open | partially_filled | filled | cancelled | rejected")
    filled_quantity: int
    remaining_quantity: int
    fills: list[Fill]
    sequence_number: int | None = Field(None, description="the order's first envelope on market:{symbol}")
    duplicate: bool = Field(False, description="true when client_order_id was seen: this is the first order")
    symbol: str | None = None
    side: str | None = None
    type: str | None = None
    price: int | None = None
    quantity: int | None = None
    time_in_force: str | None = None


class OpenOrder(BaseModel):
    server_order_id: int
    client_order_id: str | None
    symbol: str
    side: str
    price: int | None
    remaining_quantity: int
    filled_quantity: int
    post_only: bool
    expire_at_ms: int | None
    status: str


class OpenOrders(BaseModel):
    orders: list[OpenOrder]


class Position(BaseModel):
    symbol: str
    position: int = Field(description="long - short")
    long: int
    short: int
    locked: int = Field(description="long units held by resting sells")


class Positions(BaseModel):
    account: str
    cash_minor: int
    reserved_minor: int
    positions: list[Position]


class MarkedPosition(Position):
    mark_price: int | None
    mark_source: Literal["last_trade", "settlement", "none"]
    value_minor: int


class Pnl(BaseModel):
    account: str
    cash_minor: int
    reserved_minor: int
    positions: list[MarkedPosition]
    positions_value_minor: int
    net_worth_minor: int
    starting_balance_minor: int
    pnl_minor: int = Field(description="net worth - starting balance")


# ---------------------------------------------------------------- routes


@router.post("/api/v1/order", status_code=201, dependencies=ip_limited, response_model=OrderOut)
def place_order(
    body: OrderRequest, caller: Trader, orderbook: OrderbookDep, resources: ResourcesDep
) -> OrderOut:
    command: dict[str, Any] = {
        "account": caller.user_id,
        "symbol": body.symbol,
        "side": body.side,
        "type": body.type,
        "price": body.price,
        "quantity": body.quantity,
        "time_in_force": body.time_in_force,
        "post_only": body.post_only,
        "client_order_id": body.client_order_id,
        "expire_at_ms": None if body.expire_at is None else _epoch_ms(body.expire_at),
    }
    if command["expire_at_ms"] is not None and not 0 <= command["expire_at_ms"] <= EXPIRE_AT_MS_MAX:
        raise ProblemError(422, "invalid_expiry", "expire_at is out of range")
    ack = _unknown_account_as_funds(lambda: orderbook.place_order(command))
    if ack.get("duplicate"):
        return _first_order(resources, caller.user_id, ack)
    out = OrderOut(
        **{k: ack[k] for k in ("server_order_id", "client_order_id", "status", "filled_quantity")},
        remaining_quantity=ack.get("remaining_quantity", 0),
        fills=ack.get("fills", []),
        sequence_number=ack.get("sequence_number"),
        symbol=body.symbol,
        side=body.side,
        type=body.type,
        price=body.price,
        quantity=body.quantity,
        time_in_force=body.time_in_force,
    )
    _remember(resources, caller.user_id, command, out)
    return out


@router.post("/api/v1/order/{server_order_id}/cancel", dependencies=ip_limited, response_model=OrderOut)
def cancel_order(
    server_order_id: Annotated[int, Path(ge=1, le=ORDER_ID_MAX)],
    caller: Trader,
    orderbook: OrderbookDep,
    resources: ResourcesDep,
) -> OrderOut:
    try:
        ack = orderbook.cancel_order(caller.user_id, server_order_id)
    except OrderbookError as exc:
        if exc.code == "not_owner":
            # Someone else's order gets the answer an unknown id gets: ids are sequential,
            # and a distinct answer would let anyone probe which orders exist.
            raise ProblemError(
                409,
                "order_not_open",
                "no open order with that id",
                extra={"server_order_id": server_order_id},
            ) from None
        raise
    row = None
    try:  # the cancel stands even if recording it fails
        row = _load(resources, caller.user_id, server_order_id)
        with resources.pool.connection() as conn:
            conn.execute(
                "UPDATE api_order SET status = 'cancelled', filled_quantity = %s, updated_at = now()"
                " WHERE server_order_id = %s AND account = %s",
                (ack.get("filled_quantity", 0), server_order_id, caller.user_id),
            )
    except psycopg.Error:
        _log.exception("could not record the cancel of order %s", server_order_id)
    base = _row_out(row) if row is not None else {}
    base.update(
        server_order_id=server_order_id,
        client_order_id=base.get("client_order_id"),
        status="cancelled",
        filled_quantity=ack.get("filled_quantity", 0),
        remaining_quantity=0,
        fills=base.get("fills", []),
        sequence_number=None,
    )
    return OrderOut(**base)


@router.get("/api/v1/orders/open", response_model=OpenOrders)
def open_orders(caller: CurrentUser, orderbook: OrderbookDep, resources: ResourcesDep) -> OpenOrders:
    view = _account(orderbook, caller.user_id)
    orders = view["open_orders"]
    ids = [o["server_order_id"] for o in orders]
    client_ids: dict[int, str | None] = {}
    if ids:
        with resources.pool.connection() as conn:
            rows = conn.execute(
                "SELECT server_order_id, client_order_id FROM api_order"
                " WHERE account = %s AND server_order_id = ANY(%s)",
                (caller.user_id, ids),
            ).fetchall()
        client_ids = {r[0]: r[1] for r in rows}
    return OpenOrders(
        orders=[
            OpenOrder(
                client_order_id=client_ids.get(o["server_order_id"]),
                **{k: v for k, v in o.items() if k in OpenOrder.model_fields},
            )
            for o in orders
        ]
    )


@router.get("/api/v1/positions", response_model=Positions)
def positions(caller: CurrentUser, orderbook: OrderbookDep) -> Positions:
    view = _account(orderbook, caller.user_id)
    return Positions(
        account=caller.user_id,
        cash_minor=view["cash_minor"],
        reserved_minor=view["reserved_minor"],
        positions=_positions(view),
    )


@router.get("/api/v1/pnl", response_model=Pnl)
def pnl(caller: CurrentUser, orderbook: OrderbookDep, request: Request) -> Pnl:
    view = _account(orderbook, caller.user_id)
    markets = {p.symbol: orderbook.snapshot(p.symbol, depth=1)["market"] for p in _positions(view)}
    return mark_to_market(
        caller.user_id, view, markets, starting_balance_minor=auth_config(request).starting_balance_minor
    )


# ---------------------------------------------------------------- P&L (pure)


def mark_to_market(
    account: str, view: dict[str, Any], markets: dict[str, dict[str, Any]], *, starting_balance_minor: int
) -> Pnl:
    """Value an account's positions at each market's last trade (its settlement once settled).

    A long unit is worth `mark`, a short unit `settle_max - mark` (what each pays at
    settlement; a short's collateral left cash when it traded), both times the market's
    `multiplier_minor`. So net worth = cash + reserved + Σ value, and summed over all
    accounts it equals all deposits whatever the marks. A position can only come from a
    trade, so a mark is always there; were it missing, the position is valued at 0
    (`mark_source` "none") rather than guessed.
    """
    marked: list[MarkedPosition] = []
    for p in _positions(view):
        market = markets[p.symbol]
        mark: int | None
        source: Literal["last_trade", "settlement", "none"]
        if market.get("settlement_price") is not None:
            mark, source = market["settlement_price"], "settlement"
        elif market.get("last_trade") is not None:
            mark, source = market["last_trade"]["price"], "last_trade"
        else:
            mark, source = None, "none"
        value = 0
        if mark is not None:
            value = (p.long * mark + p.short * (market["settle_max"] - mark)) * market["multiplier_minor"]
        marked.append(
            MarkedPosition(**p.model_dump(), mark_price=mark, mark_source=source, value_minor=value)
        )
    positions_value = sum(m.value_minor for m in marked)
    net_worth = view["cash_minor"] + view["reserved_minor"] + positions_value
    return Pnl(
        account=account,
        cash_minor=view["cash_minor"],
        reserved_minor=view["reserved_minor"],
        positions=marked,
        positions_value_minor=positions_value,
        net_worth_minor=net_worth,
        starting_balance_minor=starting_balance_minor,
        pnl_minor=net_worth - starting_balance_minor,
    )


# ---------------------------------------------------------------- helpers


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _unknown_account_as_funds(call: Any) -> dict[str, Any]:
    """An account the host never funded has no money: say so in the client's terms."""
    try:
        result: dict[str, Any] = call()
    except OrderbookError as exc:
        if exc.code == "unknown_account":
            raise ProblemError(422, "insufficient_funds", "this account has no balance yet") from None
        raise
    return result


def _account(orderbook: OrderbookClient, account: str) -> dict[str, Any]:
    try:
        return orderbook.account(account)
    except OrderbookError as exc:
        if exc.code == "unknown_account":  # never funded: an empty account, not an error
            return {
                "account": account,
                "cash_minor": 0,
                "reserved_minor": 0,
                "positions": {},
                "open_orders": [],
            }
        raise


def _positions(view: dict[str, Any]) -> list[Position]:
    return [
        Position(symbol=s, **{k: p[k] for k in ("position", "long", "short", "locked")})
        for s, p in sorted(view["positions"].items())
    ]


_ROW_COLUMNS = (
    "server_order_id, client_order_id, symbol, side, order_type, price_ticks, quantity, time_in_force,"
    " status, filled_quantity, fills, sequence_number"
)


def _load(resources: Resources, account: str, server_order_id: int) -> tuple[Any, ...] | None:
    with resources.pool.connection() as conn:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM api_order WHERE server_order_id = %s AND account = %s",
            (server_order_id, account),
        ).fetchone()
    return row


def _row_out(row: tuple[Any, ...]) -> dict[str, Any]:
    (oid, coid, symbol, side, order_type, price, quantity, tif, status, filled, fills, seq) = row
    return {
        "server_order_id": oid,
        "client_order_id": coid,
        "symbol": symbol,
        "side": side,
        "type": order_type,
        "price": price,
        "quantity": quantity,
        "time_in_force": tif,
        "status": status,
        "filled_quantity": filled,
        "remaining_quantity": 0 if status not in RESTING else quantity - filled,
        "fills": fills,
        "sequence_number": seq,
    }


def _remember(resources: Resources, account: str, command: dict[str, Any], out: OrderOut) -> None:
    """Record an accepted order; the order stands even if this write fails."""
    try:
        with resources.pool.connection() as conn:
            conn.execute(
                "INSERT INTO api_order (server_order_id, account, client_order_id, symbol, side,"
                " order_type, price_ticks, quantity, time_in_force, post_only, expire_at_ms, status,"
                " filled_quantity, fills, sequence_number)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    out.server_order_id,
                    account,
                    command["client_order_id"],
                    command["symbol"],
                    command["side"],
                    command["type"],
                    command["price"],
                    command["quantity"],
                    command["time_in_force"],
                    command["post_only"],
                    command["expire_at_ms"],
                    out.status,
                    out.filled_quantity,
                    Jsonb([f.model_dump() for f in out.fills]),
                    out.sequence_number,
                ),
            )
    except Exception:
        _log.exception("could not record order %s of %s", out.server_order_id, account)


def _first_order(resources: Resources, account: str, ack: dict[str, Any]) -> OrderOut:
    """The first order for a repeated client_order_id, in its current state as far as known.

    While it rests, the host's status and filled quantity are current. Once it left the book
    the host says only "duplicate" and the first id; its final state then comes from the read
    model (`rm_orders`/`rm_fills`, kept by the projector) and, until the projector caught up,
    from the `api_order` row (its ack, or a cancel made here).
    """
    oid = ack["server_order_id"]
    row = _load(resources, account, oid)
    base: dict[str, Any] = (
        _row_out(row)
        if row is not None
        else {"server_order_id": oid, "client_order_id": ack["client_order_id"], "fills": []}
    )
    if ack["status"] in RESTING:
        base.update(
            status=ack["status"],
            filled_quantity=ack["filled_quantity"],
            remaining_quantity=ack["remaining_quantity"],
        )
        return OrderOut(**base, duplicate=True)
    projected = _projected(resources, account, oid)
    if projected is not None:
        status, filled, fills = projected
        base.update(status=status, filled_quantity=filled, remaining_quantity=0, fills=fills or base["fills"])
        return OrderOut(**base, duplicate=True)
    if row is None:
        raise ProblemError(
            409,
            "client_order_id_reused",
            "this client_order_id belongs to an earlier order that is no longer open",
            extra={"server_order_id": oid, "client_order_id": ack["client_order_id"]},
        )
    return OrderOut(**base, duplicate=True)


def _projected(
    resources: Resources, account: str, server_order_id: int
) -> tuple[str, int, list[dict[str, Any]]] | None:
    """The read model's final state of an order that left the book, if it has it."""
    try:
        with resources.pool.connection() as conn:
            order = conn.execute(
                "SELECT status, filled FROM rm_orders WHERE server_order_id = %s AND account = %s"
                " AND status IN ('filled', 'cancelled')",
                (server_order_id, account),
            ).fetchone()
            if order is None:
                return None
            fills = conn.execute(
                "SELECT trade_id, price, quantity, liquidity FROM rm_fills"
                " WHERE server_order_id = %s AND account = %s ORDER BY trade_id",
                (server_order_id, account),
            ).fetchall()
    except psycopg.Error:
        _log.warning("read model unavailable for order %s", server_order_id, exc_info=True)
        return None
    return (
        order[0],
        order[1],
        [{"trade_id": f[0], "price": f[1], "quantity": f[2], "liquidity": f[3]} for f in fills],
    )
