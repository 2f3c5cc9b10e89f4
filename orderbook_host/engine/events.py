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

from dataclasses import dataclass, fields
from typing import Any

from orderbook_host.engine.frozen import fast_frozen_init

# Why cancelled (``OrderCancelled.reason``).
REASON_USER = "user"
REASON_IOC_REMAINDER = "ioc_remainder"
REASON_STP = "stp"
REASON_EXPIRED = "expired"
REASON_MARKET_CLOSED = "market_closed"


class _Event:
    """Base of the events. ``TYPE`` is a read-only property in each class (a ``ClassVar`` with a
    value would become a dataclass field once mypyc compiles the module)."""

    __slots__ = ()

    @property
    def TYPE(self) -> str:  # noqa: N802 - the public name predates the property
        raise NotImplementedError

    def to_payload(self) -> dict[str, Any]:
        cls = type(self)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        payload: dict[str, Any] = {"type": self.TYPE}
        for name in names:
            payload[name] = getattr(self, name)
        return payload


# Field names per event class, filled on first use (compiled classes expose no ``__slots__``).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class MarketCreated(_Event):
    symbol: str
    kind: str
    tick_size: int
    price_min: int
    price_max: int
    settle_max: int
    multiplier_minor: int
    allow_short: bool
    status: str

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "market_created"


@dataclass(frozen=True, slots=True)
class MarketStatusChanged(_Event):
    symbol: str
    status: str
    ts_ms: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "market_status"


@dataclass(frozen=True, slots=True)
class MarketSettled(_Event):
    symbol: str
    settlement_price: int
    ts_ms: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "market_settled"


@dataclass(frozen=True, slots=True)
class OrderAccepted(_Event):
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

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_accepted"


@dataclass(frozen=True, slots=True)
class OrderRejected(_Event):
    account: str
    symbol: str
    server_order_id: int
    client_order_id: str | None
    code: str

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_rejected"


@dataclass(frozen=True, slots=True)
class OrderDuplicate(_Event):
    """A ``client_order_id`` seen before for this account: no new order was made."""

    account: str
    client_order_id: str
    server_order_id: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_duplicate"


@dataclass(frozen=True, slots=True)
class Trade(_Event):
    """One execution at the maker's (resting order's) price."""

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

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "trade"


@dataclass(frozen=True, slots=True)
class OrderCancelled(_Event):
    """``cancelled_quantity`` left the book; ``remaining_quantity`` > 0 only for an STP decrement
    that shrank a resting order without removing it."""

    symbol: str
    account: str
    server_order_id: int
    reason: str
    cancelled_quantity: int
    remaining_quantity: int
    filled_quantity: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_cancelled"


@dataclass(frozen=True, slots=True)
class OrderReplaced(_Event):
    symbol: str
    account: str
    server_order_id: int
    price: int
    old_quantity: int
    quantity: int
    priority_kept: bool

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_replaced"


@dataclass(frozen=True, slots=True)
class BookLevel(_Event):
    """New total open quantity at one price level (0: the level is gone)."""

    symbol: str
    side: str
    price: int
    quantity: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "book"


@dataclass(frozen=True, slots=True)
class BalanceChanged(_Event):
    account: str
    cash_minor: int
    reserved_minor: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "balance"


@dataclass(frozen=True, slots=True)
class PositionChanged(_Event):
    """``position`` = long - short; ``locked_quantity`` is long held for resting sells."""

    account: str
    symbol: str
    position: int
    long_quantity: int
    short_quantity: int
    locked_quantity: int

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "position"


fast_frozen_init(
    MarketCreated,
    MarketStatusChanged,
    MarketSettled,
    OrderAccepted,
    OrderRejected,
    OrderDuplicate,
    Trade,
    OrderCancelled,
    OrderReplaced,
    BookLevel,
    BalanceChanged,
    PositionChanged,
)

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
