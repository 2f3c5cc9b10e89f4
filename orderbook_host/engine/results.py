"""Synchronous results of ``Exchange.apply``: the events plus, for orders, the ack the host returns.

``OrderAck`` carries exactly the contract's order response fields (``POST /order``):
``server_order_id``, ``client_order_id``, ``status`` (open | partially_filled | filled |
cancelled | rejected, or ``duplicate`` when ``client_order_id`` was seen before and no new order
was made: ``server_order_id`` is then the first order's id and ``duplicate`` is True),
``filled_quantity``, ``fills`` and ``code`` (the reject code, None otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orderbook_host.engine.events import Event
from orderbook_host.engine.frozen import fast_frozen_init


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: int
    price: int
    quantity: int
    liquidity: str  # "maker" | "taker"

    def to_payload(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "price": self.price,
            "quantity": self.quantity,
            "liquidity": self.liquidity,
        }


@dataclass(frozen=True, slots=True)
class OrderAck:
    server_order_id: int
    client_order_id: str | None
    status: str
    filled_quantity: int
    remaining_quantity: int
    fills: tuple[Fill, ...]
    code: str | None
    duplicate: bool

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


fast_frozen_init(Fill, OrderAck)


@dataclass(slots=True)
class Outcome:
    """``code`` is None when the command did what it asked; otherwise a code from ``codes``."""

    events: list[Event]
    code: str | None
    ack: OrderAck | None

    @property
    def ok(self) -> bool:
        return self.code is None
