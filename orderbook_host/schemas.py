"""Request and response bodies of the orderbook host's HTTP API (service to service).

Closed schemas (unknown fields refused), strict integers (no "42" or 42.0 for a price), and
bounds that stop absurd values before they reach the engine; the engine then checks what
depends on state (tick grid, market bounds, funds).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9-]{0,31}$"
ACCOUNT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
QUANTITY_MAX = 1_000_000_000
PRICE_MAX = 1_000_000_000
AMOUNT_MAX_MINOR = 10**15

Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN)]
Account = Annotated[str, Field(pattern=ACCOUNT_PATTERN)]
Quantity = Annotated[StrictInt, Field(ge=1, le=QUANTITY_MAX)]
Price = Annotated[StrictInt, Field(ge=0, le=PRICE_MAX)]
AmountMinor = Annotated[StrictInt, Field(ge=1, le=AMOUNT_MAX_MINOR)]
OrderId = Annotated[StrictInt, Field(ge=1, le=2**62)]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderRequest(Closed):
    account: Account
    symbol: Symbol
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"] = "limit"
    price: Price | None = None
    quantity: Quantity
    time_in_force: Literal["GTC", "IOC", "FOK", "GTD"] = "GTC"
    post_only: StrictBool = False
    client_order_id: Annotated[str, Field(pattern=CLIENT_ORDER_ID_PATTERN)] | None = None
    expire_at_ms: Annotated[StrictInt, Field(ge=0, le=2**53)] | None = None
    stp: Literal["cancel_oldest", "cancel_newest", "cancel_both", "decrement"] = "cancel_oldest"


class CancelRequest(Closed):
    account: Account
    server_order_id: OrderId


class ReplaceRequest(Closed):
    account: Account
    server_order_id: OrderId
    quantity: Quantity
    price: Price | None = None


class CreateMarketRequest(Closed):
    symbol: Symbol
    kind: Literal["binary", "scalar"]
    tick_size: Annotated[StrictInt, Field(ge=1, le=PRICE_MAX)] = 1
    price_min: Price = 1
    price_max: Price = 99
    multiplier_minor: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 1
    allow_short: StrictBool = True
    status: Literal["open", "halted"] = "open"


class MarketStatusRequest(Closed):
    status: Literal["open", "halted", "closed"]


class ResolveRequest(Closed):
    settlement_price: Price


class NotifyRequest(Closed):
    account: Account
    message: dict[str, Any] = Field(description="a JSON object delivered on agent:{account}")


class AmountRequest(Closed):
    amount_minor: AmountMinor


class FillOut(BaseModel):
    trade_id: int
    price: int
    quantity: int
    liquidity: Literal["maker", "taker"]


class OrderAckOut(BaseModel):
    server_order_id: int
    client_order_id: str | None
    status: str
    filled_quantity: int
    remaining_quantity: int
    fills: list[FillOut]
    duplicate: bool
    sequence_number: int | None = Field(
        None, description="the order's first envelope on its market:{symbol} channel (or agent channel)"
    )


class CommandOut(BaseModel):
    ok: bool = True
    wal_seq: int | None
    result: dict[str, Any] = Field(default_factory=dict)


class SnapshotOut(BaseModel):
    symbol: str
    status: str
    last_sequence: int
    bids: list[list[int]]
    asks: list[list[int]]
    last_trade: dict[str, Any] | None
    market: dict[str, Any]
    events: list[dict[str, Any]] | None = None
