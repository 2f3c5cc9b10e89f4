"""Events: what a command did, returned by the engine (never pushed through callbacks).

Each event is a small frozen slotted dataclass; ``to_payload()`` gives a JSON-able dict whose
``type`` field names it. The host decides where each goes (suggested routing):

================  ===============================  ==========================================
type              class                            channel
================  ===============================  ==========================================
market_created    MarketCreated                    market:{symbol}
market_status     MarketStatusChanged              market:{symbol}
market_settled    MarketSettled                    market:{symbol}
order_accepted    OrderAccepted                    market:{symbol} (strip account) + agent
order_rejected    OrderRejected                    agent:{account}
order_duplicate   OrderDuplicate                   agent:{account}
trade             Trade                            market:{symbol} (strip accounts) + both agents
order_cancelled   OrderCancelled                   market:{symbol} + agent:{account}
order_replaced    OrderReplaced                    market:{symbol} + agent:{account}
book              BookLevel                        market:{symbol}
balance           BalanceChanged                   agent:{account}
position          PositionChanged                  agent:{account}
================  ===============================  ==========================================

Order of events inside one command is deterministic: order lifecycle events in the order they
happened, a ``book`` event after each price level the command finished touching (the level's
new total; 0 means the level is gone), then ``balance``/``position`` events for each account
touched, in first-touch order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from orderbook_host.engine.frozen import fast_frozen_init

# Why cancelled (``OrderCancelled.reason``).
REASON_USER = "user"
REASON_IOC_REMAINDER = "ioc_remainder"
REASON_STP = "stp"
REASON_EXPIRED = "expired"
REASON_MARKET_CLOSED = "market_closed"


class _Event:
    __slots__ = ()
    TYPE: ClassVar[str]

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"type": self.TYPE}
        name: str
        for name in self.__slots__:
            payload[name] = getattr(self, name)
        return payload


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class MarketCreated(_Event):
    TYPE: ClassVar[str] = "market_created"
    symbol: str
    kind: str
    tick_size: int
    price_min: int
    price_max: int
    settle_max: int
    multiplier_minor: int
    allow_short: bool
    status: str


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class MarketStatusChanged(_Event):
    TYPE: ClassVar[str] = "market_status"
    symbol: str
    status: str
    ts_ms: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class MarketSettled(_Event):
    TYPE: ClassVar[str] = "market_settled"
    symbol: str
    settlement_price: int
    ts_ms: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OrderAccepted(_Event):
    TYPE: ClassVar[str] = "order_accepted"
    symbol: str
    account: str
    server_order_id: int
    client_order_id: str | None
    side: str
    order_type: str
    price: int
    quantity: int
    time_in_force: str
    ts_ms: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OrderRejected(_Event):
    TYPE: ClassVar[str] = "order_rejected"
    account: str
    symbol: str
    server_order_id: int
    client_order_id: str | None
    code: str


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OrderDuplicate(_Event):
    """A ``client_order_id`` seen before for this account: no new order was made."""

    TYPE: ClassVar[str] = "order_duplicate"
    account: str
    client_order_id: str
    server_order_id: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Trade(_Event):
    """One execution at the maker's (resting order's) price."""

    TYPE: ClassVar[str] = "trade"
    symbol: str
    trade_id: int
    price: int
    quantity: int
    taker_side: str
    maker_order_id: int
    taker_order_id: int
    maker_account: str
    taker_account: str
    maker_remaining_quantity: int
    taker_remaining_quantity: int
    ts_ms: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OrderCancelled(_Event):
    """``cancelled_quantity`` left the book; ``remaining_quantity`` > 0 only for an STP decrement
    that shrank a resting order without removing it."""

    TYPE: ClassVar[str] = "order_cancelled"
    symbol: str
    account: str
    server_order_id: int
    reason: str
    cancelled_quantity: int
    remaining_quantity: int
    filled_quantity: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OrderReplaced(_Event):
    TYPE: ClassVar[str] = "order_replaced"
    symbol: str
    account: str
    server_order_id: int
    price: int
    old_quantity: int
    quantity: int
    priority_kept: bool


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class BookLevel(_Event):
    """New total open quantity at one price level (0: the level is gone)."""

    TYPE: ClassVar[str] = "book"
    symbol: str
    side: str
    price: int
    quantity: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class BalanceChanged(_Event):
    TYPE: ClassVar[str] = "balance"
    account: str
    cash_minor: int
    reserved_minor: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class PositionChanged(_Event):
    """``position`` = long - short; ``locked_quantity`` is long held for resting sells."""

    TYPE: ClassVar[str] = "position"
    account: str
    symbol: str
    position: int
    long_quantity: int
    short_quantity: int
    locked_quantity: int


Event = (
    MarketCreated
    | MarketStatusChanged
    | MarketSettled
    | OrderAccepted
    | OrderRejected
    | OrderDuplicate
    | Trade
    | OrderCancelled
    | OrderReplaced
    | BookLevel
    | BalanceChanged
    | PositionChanged
)
