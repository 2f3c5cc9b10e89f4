"""The read model's arithmetic: candle buckets and OHLCV, order states, marking to market.

The projector (functions/projector.py) writes the orderbook host's events into PostgreSQL and
the read routes (functions/routers/reads.py) query them; both take their rules from here so
there is one definition of a candle bucket, of an order's status after an event and of an
account's net worth. Pure: standard library only, no clock, no I/O (tests feed crafted trades).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# Candle intervals and their length. Buckets are aligned on the unix epoch, which is UTC
# midnight for '1d' (no leap seconds in unix time, so every day is 86 400 000 ms).
INTERVAL_MS: Final[dict[str, int]] = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
INTERVALS: Final[tuple[str, ...]] = tuple(INTERVAL_MS)

OPEN: Final = "open"
PARTIALLY_FILLED: Final = "partially_filled"
FILLED: Final = "filled"
CANCELLED: Final = "cancelled"


def bucket_start_ms(ts_ms: int, interval: str) -> int:
    """The first millisecond of the `interval` bucket holding `ts_ms` (floor, also before 1970)."""
    width = INTERVAL_MS[interval]
    return ts_ms - ts_ms % width


@dataclass(slots=True)
class Candle:
    """OHLCV of one bucket. `open` is the first trade applied, `close` the last (stream order)."""

    symbol: str
    interval: str
    bucket_start_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    trade_count: int

    def add(self, price: int, quantity: int) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += quantity
        self.trade_count += 1


def fold_candles(
    trades: Iterable[tuple[str, int, int, int]], intervals: Iterable[str] = INTERVALS
) -> list[Candle]:
    """Candles from `(symbol, price, quantity, ts_ms)` trades in stream order.

    The reference the projector's SQL upsert is tested against: the same trades, fed in any
    page split, must give these rows.
    """
    wanted = tuple(intervals)
    candles: dict[tuple[str, str, int], Candle] = {}
    for symbol, price, quantity, ts_ms in trades:
        for interval in wanted:
            start = bucket_start_ms(ts_ms, interval)
            key = (symbol, interval, start)
            candle = candles.get(key)
            if candle is None:
                candles[key] = Candle(symbol, interval, start, price, price, price, price, quantity, 1)
            else:
                candle.add(price, quantity)
    return sorted(candles.values(), key=lambda c: (c.symbol, c.interval, c.bucket_start_ms))


def status_after_fill(remaining: int) -> str:
    return FILLED if remaining == 0 else PARTIALLY_FILLED


def status_after_cancel(remaining: int, filled: int) -> str:
    """A cancel that leaves quantity open is a self-trade-prevention decrement, not the end."""
    if remaining == 0:
        return CANCELLED
    return PARTIALLY_FILLED if filled else OPEN


def mark_price(last_price: int | None, settlement_price: int | None) -> int | None:
    """The price positions are marked at: the settlement price once settled, else the last trade."""
    return settlement_price if settlement_price is not None else last_price


def position_value_minor(
    long_quantity: int, short_quantity: int, price: int | None, settle_max: int, multiplier_minor: int
) -> int:
    """What a position is worth at `price`, in minor units.

    Mirrors the host's money model (orderbook_host/engine/exchange.py): a long unit pays the
    settlement price; a short unit's collateral `settle_max - price` already left cash and
    reserved when it was opened, and pays `settle_max - s` at settlement. Marking at `price`
    therefore values a long unit at `price` and a short unit at `settle_max - price`, so each
    long/short pair is worth `settle_max` (net worth is conserved across a trade). With no
    price yet (no trade), a unit is valued at what it would pay at the worst settlement: 0.
    """
    if price is None:
        return 0
    return multiplier_minor * (long_quantity * price + short_quantity * (settle_max - price))


_EPOCH_DAY: Final = dt.date(1970, 1, 1)


def utc_day(ts_ms: int) -> dt.date:
    return _EPOCH_DAY + dt.timedelta(days=ts_ms // INTERVAL_MS["1d"])


def rfc3339_ms(ts_ms: int) -> str:
    """`2026-11-21T08:00:00.123Z`, as the realtime envelopes write times."""
    moment = dt.datetime.fromtimestamp(ts_ms // 1000, tz=dt.UTC).replace(microsecond=(ts_ms % 1000) * 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
