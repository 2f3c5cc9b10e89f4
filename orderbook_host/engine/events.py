"""Events: what a command did, returned by the engine (never pushed through callbacks).

Each event is a small slotted dataclass with read-only fields; ``to_payload()`` gives a
JSON-able dict whose ``type`` field names it. The host decides where each goes (suggested
routing):

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

import json
from dataclasses import dataclass, fields
from typing import Any, Final

# How the value classes here, in ``commands.py`` and in ``results.py`` are written, and why:
# ``@dataclass(slots=True, init=False, unsafe_hash=True)``, fields typed ``Final`` and a plain
# ``__init__``. The engine builds several of these per command, and ``frozen=True`` makes each
# field cost an ``object.__setattr__`` call (a 12-field event ~0.75 us instead of ~0.2 us). With
# ``Final`` mypy refuses any write after ``__init__``; under mypyc (scripts/build_engine.py)
# the fields are read-only at run time too and the written-out ``__init__`` compiles to native
# code, where a dataclass-generated one would stay interpreted. ``unsafe_hash`` keeps them
# hashable as the frozen versions were (safe here: nothing writes the fields).

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


@dataclass(slots=True, init=False, unsafe_hash=True)
class MarketCreated(_Event):
    symbol: Final[str]
    kind: Final[str]
    tick_size: Final[int]
    price_min: Final[int]
    price_max: Final[int]
    settle_max: Final[int]
    multiplier_minor: Final[int]
    allow_short: Final[bool]
    status: Final[str]

    def __init__(
        self,
        symbol: str,
        kind: str,
        tick_size: int,
        price_min: int,
        price_max: int,
        settle_max: int,
        multiplier_minor: int,
        allow_short: bool,
        status: str,
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.tick_size = tick_size
        self.price_min = price_min
        self.price_max = price_max
        self.settle_max = settle_max
        self.multiplier_minor = multiplier_minor
        self.allow_short = allow_short
        self.status = status

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "market_created"


@dataclass(slots=True, init=False, unsafe_hash=True)
class MarketStatusChanged(_Event):
    symbol: Final[str]
    status: Final[str]
    ts_ms: Final[int]

    def __init__(self, symbol: str, status: str, ts_ms: int) -> None:
        self.symbol = symbol
        self.status = status
        self.ts_ms = ts_ms

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "market_status"


@dataclass(slots=True, init=False, unsafe_hash=True)
class MarketSettled(_Event):
    symbol: Final[str]
    settlement_price: Final[int]
    ts_ms: Final[int]

    def __init__(self, symbol: str, settlement_price: int, ts_ms: int) -> None:
        self.symbol = symbol
        self.settlement_price = settlement_price
        self.ts_ms = ts_ms

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "market_settled"


@dataclass(slots=True, init=False, unsafe_hash=True)
class OrderAccepted(_Event):
    symbol: Final[str]
    account: Final[str]
    server_order_id: Final[int]
    client_order_id: Final[str | None]
    side: Final[str]
    order_type: Final[str]
    price: Final[int]
    quantity: Final[int]
    time_in_force: Final[str]
    ts_ms: Final[int]

    def __init__(
        self,
        symbol: str,
        account: str,
        server_order_id: int,
        client_order_id: str | None,
        side: str,
        order_type: str,
        price: int,
        quantity: int,
        time_in_force: str,
        ts_ms: int,
    ) -> None:
        self.symbol = symbol
        self.account = account
        self.server_order_id = server_order_id
        self.client_order_id = client_order_id
        self.side = side
        self.order_type = order_type
        self.price = price
        self.quantity = quantity
        self.time_in_force = time_in_force
        self.ts_ms = ts_ms

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_accepted"


@dataclass(slots=True, init=False, unsafe_hash=True)
class OrderRejected(_Event):
    account: Final[str]
    symbol: Final[str]
    server_order_id: Final[int]
    client_order_id: Final[str | None]
    code: Final[str]

    def __init__(
        self, account: str, symbol: str, server_order_id: int, client_order_id: str | None, code: str
    ) -> None:
        self.account = account
        self.symbol = symbol
        self.server_order_id = server_order_id
        self.client_order_id = client_order_id
        self.code = code

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_rejected"


@dataclass(slots=True, init=False, unsafe_hash=True)
class OrderDuplicate(_Event):
    """A ``client_order_id`` seen before for this account: no new order was made."""

    account: Final[str]
    client_order_id: Final[str]
    server_order_id: Final[int]

    def __init__(self, account: str, client_order_id: str, server_order_id: int) -> None:
        self.account = account
        self.client_order_id = client_order_id
        self.server_order_id = server_order_id

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_duplicate"


@dataclass(slots=True, init=False, unsafe_hash=True)
class Trade(_Event):
    """One execution at the maker's (resting order's) price."""

    symbol: Final[str]
    trade_id: Final[int]
    price: Final[int]
    quantity: Final[int]
    taker_side: Final[str]
    maker_order_id: Final[int]
    taker_order_id: Final[int]
    maker_account: Final[str]
    taker_account: Final[str]
    maker_remaining_quantity: Final[int]
    taker_remaining_quantity: Final[int]
    ts_ms: Final[int]

    def __init__(
        self,
        symbol: str,
        trade_id: int,
        price: int,
        quantity: int,
        taker_side: str,
        maker_order_id: int,
        taker_order_id: int,
        maker_account: str,
        taker_account: str,
        maker_remaining_quantity: int,
        taker_remaining_quantity: int,
        ts_ms: int,
    ) -> None:
        self.symbol = symbol
        self.trade_id = trade_id
        self.price = price
        self.quantity = quantity
        self.taker_side = taker_side
        self.maker_order_id = maker_order_id
        self.taker_order_id = taker_order_id
        self.maker_account = maker_account
        self.taker_account = taker_account
        self.maker_remaining_quantity = maker_remaining_quantity
        self.taker_remaining_quantity = taker_remaining_quantity
        self.ts_ms = ts_ms

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "trade"


@dataclass(slots=True, init=False, unsafe_hash=True)
class OrderCancelled(_Event):
    """``cancelled_quantity`` left the book; ``remaining_quantity`` > 0 only for an STP decrement
    that shrank a resting order without removing it."""

    symbol: Final[str]
    account: Final[str]
    server_order_id: Final[int]
    reason: Final[str]
    cancelled_quantity: Final[int]
    remaining_quantity: Final[int]
    filled_quantity: Final[int]

    def __init__(
        self,
        symbol: str,
        account: str,
        server_order_id: int,
        reason: str,
        cancelled_quantity: int,
        remaining_quantity: int,
        filled_quantity: int,
    ) -> None:
        self.symbol = symbol
        self.account = account
        self.server_order_id = server_order_id
        self.reason = reason
        self.cancelled_quantity = cancelled_quantity
        self.remaining_quantity = remaining_quantity
        self.filled_quantity = filled_quantity

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_cancelled"


@dataclass(slots=True, init=False, unsafe_hash=True)
class OrderReplaced(_Event):
    symbol: Final[str]
    account: Final[str]
    server_order_id: Final[int]
    price: Final[int]
    old_quantity: Final[int]
    quantity: Final[int]
    priority_kept: Final[bool]

    def __init__(
        self,
        symbol: str,
        account: str,
        server_order_id: int,
        price: int,
        old_quantity: int,
        quantity: int,
        priority_kept: bool,
    ) -> None:
        self.symbol = symbol
        self.account = account
        self.server_order_id = server_order_id
        self.price = price
        self.old_quantity = old_quantity
        self.quantity = quantity
        self.priority_kept = priority_kept

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "order_replaced"


@dataclass(slots=True, init=False, unsafe_hash=True)
class BookLevel(_Event):
    """New total open quantity at one price level (0: the level is gone)."""

    symbol: Final[str]
    side: Final[str]
    price: Final[int]
    quantity: Final[int]

    def __init__(self, symbol: str, side: str, price: int, quantity: int) -> None:
        self.symbol = symbol
        self.side = side
        self.price = price
        self.quantity = quantity

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "book"


@dataclass(slots=True, init=False, unsafe_hash=True)
class BalanceChanged(_Event):
    account: Final[str]
    cash_minor: Final[int]
    reserved_minor: Final[int]

    def __init__(self, account: str, cash_minor: int, reserved_minor: int) -> None:
        self.account = account
        self.cash_minor = cash_minor
        self.reserved_minor = reserved_minor

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "balance"


@dataclass(slots=True, init=False, unsafe_hash=True)
class PositionChanged(_Event):
    """``position`` = long - short; ``locked_quantity`` is long held for resting sells."""

    account: Final[str]
    symbol: Final[str]
    position: Final[int]
    long_quantity: Final[int]
    short_quantity: Final[int]
    locked_quantity: Final[int]

    def __init__(
        self,
        account: str,
        symbol: str,
        position: int,
        long_quantity: int,
        short_quantity: int,
        locked_quantity: int,
    ) -> None:
        self.account = account
        self.symbol = symbol
        self.position = position
        self.long_quantity = long_quantity
        self.short_quantity = short_quantity
        self.locked_quantity = locked_quantity

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "position"


@dataclass(slots=True, init=False, unsafe_hash=True)
class Notice(_Event):
    """A message for one account's private channel (``Notify``)."""

    account: Final[str]
    message_json: Final[str]

    def __init__(self, account: str, message_json: str) -> None:
        self.account = account
        self.message_json = message_json

    @property
    def TYPE(self) -> str:  # noqa: N802
        return "notice"

    def to_payload(self) -> dict[str, Any]:
        return {"type": "notice", "account": self.account, "message": json.loads(self.message_json)}


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
    | Notice
)
