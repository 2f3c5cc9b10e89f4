"""Small helpers shared by the engine unit tests."""

from __future__ import annotations

from typing import Any

from orderbook_host.engine import (
    CreateMarket,
    Deposit,
    Event,
    Exchange,
    OrderCancelled,
    Outcome,
    PlaceOrder,
    Trade,
)

SYM = "US-CPI-2026-12"


class Ex:
    """An exchange with one binary market and a way to place orders tersely."""

    def __init__(self, *accounts: str, cash_minor: int = 100_000, **market: Any) -> None:
        self.ex = Exchange()
        kind = market.pop("kind", "binary")
        assert self.ex.apply(CreateMarket(SYM, kind, 0, **market)).ok
        for a in accounts:
            assert self.ex.apply(Deposit(a, cash_minor, 0)).ok
        self.ts_ms = 10

    def place(self, account: str, side: str, qty: int, price: int | None = None, **kw: Any) -> Outcome:
        self.ts_ms += 1
        kw.setdefault("symbol", SYM)
        return self.ex.apply(
            PlaceOrder(
                self.ex.next_order_id, account, kw.pop("symbol"), side, qty, self.ts_ms, price=price, **kw
            )
        )

    def cash(self, account: str) -> tuple[int, int]:
        view = self.ex.account(account)
        assert view is not None
        return view["cash_minor"], view["reserved_minor"]

    def position(self, account: str, symbol: str = SYM) -> int:
        view = self.ex.account(account)
        assert view is not None
        pos = view["positions"].get(symbol)
        return 0 if pos is None else int(pos["position"])


def trades(events: list[Event]) -> list[tuple[int, int, int, int]]:
    """(price, quantity, maker_order_id, taker_order_id) of each trade."""
    return [(e.price, e.quantity, e.maker_order_id, e.taker_order_id) for e in events if isinstance(e, Trade)]


def cancels(events: list[Event]) -> list[tuple[int, str, int]]:
    return [
        (e.server_order_id, e.reason, e.cancelled_quantity) for e in events if isinstance(e, OrderCancelled)
    ]


def types(events: list[Event]) -> list[str]:
    return [e.TYPE for e in events]
