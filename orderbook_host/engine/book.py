"""Resting-order records and one side of a price-time-priority book.

Why this shape: prices are small integers, so a side is a dict ``price -> Level`` plus a heap
of the prices for the best one. A level is a FIFO ``deque`` of orders; cancelling from the
middle only marks the order dead (``remaining = 0``) and subtracts it from the level total, so
cancel is O(1). Dead records are dropped when they reach the front or when a level holds more
dead than live records (``compact``), so memory stays proportional to live orders.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from typing import Final

BUY: Final = 0
SELL: Final = 1
SIDE_NAMES: Final = ("buy", "sell")


class Order:
    """A resting (or currently matching) limit order. Compact on purpose: ~1M of these may rest.

    ``lock`` (sells only) is how many of ``remaining`` close an existing long position; the
    rest of a sell is collateralised in cash. Cash reserved is derived, not stored:
    buy ``price * remaining * multiplier``; sell ``(settle_max - price) * (remaining - lock)
    * multiplier``.
    """

    __slots__ = (
        "account",
        "book",
        "expire_at_ms",
        "filled",
        "lock",
        "oid",
        "post_only",
        "price",
        "remaining",
        "side",
    )

    def __init__(
        self,
        oid: int,
        account: str,
        book: Book,
        side: int,
        price: int,
        remaining: int,
        lock: int,
        expire_at_ms: int,
        post_only: bool,
    ) -> None:
        self.oid = oid
        self.account = account
        self.book = book
        self.side = side
        self.price = price
        self.remaining = remaining
        self.filled = 0
        self.lock = lock
        self.expire_at_ms = expire_at_ms
        self.post_only = post_only


class Level:
    """Orders at one price in time priority. ``total`` counts live quantity only."""

    __slots__ = ("dead", "orders", "price", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.dead = 0
        self.orders: deque[Order] = deque()

    def compact(self) -> None:
        """Drop dead records once they outnumber live ones (amortised O(1) per cancel)."""
        if self.dead > 16 and self.dead * 2 > len(self.orders):
            self.orders = deque(o for o in self.orders if o.remaining)
            self.dead = 0

    def live(self) -> list[Order]:
        return [o for o in self.orders if o.remaining]


class Side:
    """One side of a book. ``sign`` makes the heap a max-heap for bids (+1 asks, -1 bids)."""

    __slots__ = ("heap", "in_heap", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []  # sign * price, may hold prices whose level is gone
        self.in_heap: set[int] = set()

    def best(self) -> Level | None:
        heap = self.heap
        levels = self.levels
        while heap:
            level = levels.get(heap[0] * self.sign)
            if level is not None:
                return level
            self.in_heap.discard(heappop(heap))
        return None

    def level_for_insert(self, price: int) -> Level:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level(price)
            key = price * self.sign
            if key not in self.in_heap:
                self.in_heap.add(key)
                heappush(self.heap, key)
        return level

    def sorted_levels(self) -> list[Level]:
        """Best first."""
        return [self.levels[p] for p in sorted(self.levels, key=lambda p: p * self.sign)]


class Book:
    """Both sides of one symbol's book and its last trade."""

    __slots__ = ("asks", "bids", "last_trade", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = Side(-1)
        self.asks = Side(1)
        self.last_trade: tuple[int, int, int, int] | None = None  # trade_id, price, quantity, ts_ms

    def side(self, side: int) -> Side:
        return self.bids if side == BUY else self.asks
