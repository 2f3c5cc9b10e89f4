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


class Terms:
    """What a resting order keeps besides its price and quantities: book, side, post-only, expiry.

    Shared to save memory: every order without an expiry points at one of its book's four
    ``Terms`` (side x post-only); only a GTD order gets its own. Never mutated after creation.
    """

    __slots__ = ("book", "expire_at_ms", "post_only", "side")

    def __init__(self, book: Book, side: int, post_only: bool, expire_at_ms: int) -> None:
        self.book = book
        self.side = side
        self.post_only = post_only
        self.expire_at_ms = expire_at_ms


class Order:
    """A resting (or currently matching) limit order. Compact on purpose: ~1M of these may rest.

    Seven slots, so the record is 96 bytes in both builds (CPython rounds allocations to 16 B;
    mypyc adds a vtable pointer): the rarely read fields live in the shared ``terms``.

    ``lock`` (sells only) is how many of ``remaining`` close an existing long position; the
    rest of a sell is collateralised in cash. Cash reserved is derived, not stored:
    buy ``price * remaining * multiplier``; sell ``(settle_max - price) * (remaining - lock)
    * multiplier``.
    """

    __slots__ = ("account", "filled", "lock", "oid", "price", "remaining", "terms")

    def __init__(self, oid: int, account: str, terms: Terms, price: int, remaining: int, lock: int) -> None:
        self.oid = oid
        self.account = account
        self.terms = terms
        self.price = price
        self.remaining = remaining
        self.filled = 0
        self.lock = lock

    @property
    def book(self) -> Book:
        return self.terms.book

    @property
    def side(self) -> int:
        return self.terms.side

    @property
    def post_only(self) -> bool:
        return self.terms.post_only

    @property
    def expire_at_ms(self) -> int:
        return self.terms.expire_at_ms


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

    __slots__ = ("asks", "bids", "last_trade", "plain_terms", "post_only_terms", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = Side(-1)
        self.asks = Side(1)
        self.last_trade: tuple[int, int, int, int] | None = None  # trade_id, price, quantity, ts_ms
        # Indexed by side code (BUY 0, SELL 1): the terms every non-expiring order shares.
        self.plain_terms = (Terms(self, BUY, False, 0), Terms(self, SELL, False, 0))
        self.post_only_terms = (Terms(self, BUY, True, 0), Terms(self, SELL, True, 0))

    def terms_for(self, side: int, post_only: bool, expire_at_ms: int) -> Terms:
        if expire_at_ms:
            return Terms(self, side, post_only, expire_at_ms)
        return self.post_only_terms[side] if post_only else self.plain_terms[side]

    def side(self, side: int) -> Side:
        return self.bids if side == BUY else self.asks
