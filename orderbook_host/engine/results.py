"""Synchronous results of ``Exchange.apply``: the events plus, for orders, the ack the host returns.

``OrderAck`` carries exactly the contract's order response fields (``POST /order``):
``server_order_id``, ``client_order_id``, ``status`` (open | partially_filled | filled |
cancelled | rejected, or ``duplicate`` when ``client_order_id`` was seen before and no new order
was made: ``server_order_id`` is then the first order's id and ``duplicate`` is True),
``filled_quantity``, ``fills`` and ``code`` (the reject code, None otherwise).

``Fill`` and ``OrderAck`` are written like the events (read-only ``Final`` fields, a plain
``__init__``; see events.py); ``Outcome`` keeps ordinary fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from orderbook_host.engine.events import Event


@dataclass(slots=True, init=False, unsafe_hash=True)
class Fill:
    trade_id: Final[int]
    price: Final[int]
    quantity: Final[int]
    liquidity: Final[str]  # "maker" | "taker"

    def __init__(self, trade_id: int, price: int, quantity: int, liquidity: str) -> None:
        self.trade_id = trade_id
        self.price = price
        self.quantity = quantity
        self.liquidity = liquidity

    def to_payload(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "price": self.price,
            "quantity": self.quantity,
            "liquidity": self.liquidity,
        }


@dataclass(slots=True, init=False, unsafe_hash=True)
class OrderAck:
    server_order_id: Final[int]
    client_order_id: Final[str | None]
    status: Final[str]
    filled_quantity: Final[int]
    remaining_quantity: Final[int]
    fills: Final[tuple[Fill, ...]]
    code: Final[str | None]
    duplicate: Final[bool]

    def __init__(
        self,
        server_order_id: int,
        client_order_id: str | None,
        status: str,
        filled_quantity: int,
        remaining_quantity: int,
        fills: tuple[Fill, ...],
        code: str | None,
        duplicate: bool,
    ) -> None:
        self.server_order_id = server_order_id
        self.client_order_id = client_order_id
        self.status = status
        self.filled_quantity = filled_quantity
        self.remaining_quantity = remaining_quantity
        self.fills = fills
        self.code = code
        self.duplicate = duplicate

    def to_payload(self) -> dict[str, Any]:
        return {
            "server_order_id": self.server_order_id,
            "client_order_id": self.client_order_id,
            "status": self.status,
            "filled_quantity": self.filled_quantity,
            "remaining_quantity": self.remaining_quantity,
            "fills": [f.to_payload() for f in self.fills],
            "code": self.code,
            "duplicate": self.duplicate,
        }


@dataclass(slots=True, init=False)
class Outcome:
    """``code`` is None when the command did what it asked; otherwise a code from ``codes``."""

    events: list[Event]
    code: str | None
    ack: OrderAck | None

    def __init__(self, events: list[Event], code: str | None, ack: OrderAck | None) -> None:
        self.events = events
        self.code = code
        self.ack = ack

    @property
    def ok(self) -> bool:
        return self.code is None
