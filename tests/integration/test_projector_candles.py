"""Candle OHLCV math on crafted trades: bucket boundaries, order of open/close, page splits."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from functions import read_model as rm
from functions.projector import Projector

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_bucket_start_floors_on_utc_boundaries() -> None:
    assert rm.bucket_start_ms(T0, "1m") == T0
    assert rm.bucket_start_ms(T0 + MIN - 1, "1m") == T0
    assert rm.bucket_start_ms(T0 + MIN, "1m") == T0 + MIN
    assert rm.bucket_start_ms(T0 - 1, "1d") == T0 - DAY
    assert rm.bucket_start_ms(T0 + DAY - 1, "1h") == T0 + DAY - HOUR
    assert rm.bucket_start_ms(-1, "1m") == -MIN  # floor, not truncation toward zero
    assert rm.rfc3339_ms(T0 + 123) == "2026-01-01T00:00:00.123Z"
    assert rm.utc_day(T0 - 1).isoformat() == "2025-12-31"


def test_fold_candles_ohlcv() -> None:
    trades = [
        ("X", 50, 2, T0 + 10),  # minute 0: open 50
        ("X", 55, 1, T0 + 20),
        ("X", 45, 3, T0 + MIN - 1),  # last ms of minute 0: close 45
        ("X", 60, 4, T0 + MIN),  # first ms of minute 1
        ("Y", 7, 1, T0 + 5),
        ("X", 52, 1, T0 + HOUR),  # next hour
    ]
    by_key = {(c.symbol, c.interval, c.bucket_start_ms): c for c in rm.fold_candles(trades)}
    m0 = by_key[("X", "1m", T0)]
    assert (m0.open, m0.high, m0.low, m0.close, m0.volume, m0.trade_count) == (50, 55, 45, 45, 6, 3)
    m1 = by_key[("X", "1m", T0 + MIN)]
    assert (m1.open, m1.high, m1.low, m1.close, m1.volume, m1.trade_count) == (60, 60, 60, 60, 4, 1)
    h0 = by_key[("X", "1h", T0)]
    assert (h0.open, h0.high, h0.low, h0.close, h0.volume, h0.trade_count) == (50, 60, 45, 60, 10, 4)
    d0 = by_key[("X", "1d", T0)]
    assert (d0.open, d0.high, d0.low, d0.close, d0.volume, d0.trade_count) == (50, 60, 45, 52, 11, 5)
    assert by_key[("Y", "1d", T0)].volume == 1
    assert len(by_key) == 3 + 2 + 1 + 3  # X: 3 minutes, 2 hours, 1 day; Y: one of each


class _NoSource:
    def fetch(self, after: int, limit: int) -> dict[str, Any]:
        raise AssertionError("not used")


def _records(trades: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """One record per trade (price, quantity, ts_ms) after a market_created record."""
    records: list[dict[str, Any]] = [
        {
            "wal_seq": 1,
            "ts_ms": T0,
            "events": [
                {
                    "type": "market_created",
                    "symbol": "CND",
                    "kind": "binary",
                    "tick_size": 1,
                    "price_min": 1,
                    "price_max": 99,
                    "settle_max": 100,
                    "multiplier_minor": 1,
                    "allow_short": True,
                    "status": "open",
                }
            ],
        }
    ]
    for n, (price, qty, ts_ms) in enumerate(trades, start=1):
        records.append(
            {
                "wal_seq": n + 1,
                "ts_ms": ts_ms,
                "events": [
                    {
                        "type": "trade",
                        "symbol": "CND",
                        "trade_id": n,
                        "price": price,
                        "quantity": qty,
                        "taker_side": "buy" if n % 2 else "sell",
                        "maker_order_id": 2 * n,
                        "taker_order_id": 2 * n + 1,
                        "maker_account": "m",
                        "taker_account": "t",
                        "maker_remaining_quantity": 0,
                        "taker_remaining_quantity": 0,
                        "ts_ms": ts_ms,
                    }
                ],
            }
        )
    return records


@pytest.mark.parametrize("page", [1, 3, 100])
def test_sql_candles_equal_the_fold_whatever_the_page_split(db_url: str, page: int) -> None:
    trades = [
        (50, 1, T0 + 1),
        (70, 2, T0 + MIN - 1),
        (30, 1, T0 + MIN),
        (40, 5, T0 + MIN + 1),
        (99, 1, T0 + HOUR - 1),
        (1, 1, T0 + HOUR),
        (60, 3, T0 + DAY - 1),
        (61, 1, T0 + DAY),
        (62, 1, T0 + DAY + 2 * HOUR + 5),
    ]
    records = _records(trades)
    with psycopg.connect(db_url, autocommit=True) as conn:
        projector = Projector(conn, _NoSource())
        for start in range(0, len(records), page):
            projector.apply_page(records[start : start + page])
        rows = conn.execute(
            "SELECT symbol, interval, bucket_start_ms, open, high, low, close, volume, trade_count"
            " FROM rm_candles ORDER BY symbol, interval, bucket_start_ms"
        ).fetchall()
        assert projector.cursor() == len(records)
        market = conn.execute("SELECT volume, trade_count, last_price FROM rm_markets").fetchone()
    expected = rm.fold_candles(("CND", p, q, ts) for p, q, ts in trades)
    assert rows == [
        (c.symbol, c.interval, c.bucket_start_ms, c.open, c.high, c.low, c.close, c.volume, c.trade_count)
        for c in expected
    ]
    assert market == (sum(q for _, q, _ in trades), len(trades), 62)
