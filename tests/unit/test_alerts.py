"""The pure alert rule and the notice it produces (no database, no network)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from functions.alerts import AlertRule, FiredAlert, fires, triggered

ABOVE_60 = AlertRule("al-a", "above", 60)
BELOW_40 = AlertRule("al-b", "below", 40)
BELOW_60 = AlertRule("al-c", "below", 60)


def test_above_fires_at_or_over_the_threshold() -> None:
    assert triggered([ABOVE_60], 59) == []
    assert triggered([ABOVE_60], 60) == [ABOVE_60]
    assert triggered([ABOVE_60], 99) == [ABOVE_60]


def test_below_fires_at_or_under_the_threshold() -> None:
    assert triggered([BELOW_40], 41) == []
    assert triggered([BELOW_40], 40) == [BELOW_40]
    assert triggered([BELOW_40], 1) == [BELOW_40]


def test_several_alerts_keep_their_order() -> None:
    alerts = [BELOW_60, ABOVE_60, BELOW_40]
    assert triggered(alerts, 60) == [BELOW_60, ABOVE_60]
    assert triggered(alerts, 30) == [BELOW_60, BELOW_40]
    assert triggered(alerts, 50) == [BELOW_60]
    assert triggered([], 50) == []
    assert triggered(iter(alerts), 70) == [ABOVE_60]  # any iterable


@given(
    threshold=st.integers(min_value=0, max_value=10**9),
    price=st.integers(min_value=0, max_value=10**9),
)
def test_exactly_one_side_fires_unless_at_the_threshold(threshold: int, price: int) -> None:
    above = fires(AlertRule("al-x", "above", threshold), price)
    below = fires(AlertRule("al-y", "below", threshold), price)
    if price == threshold:
        assert above and below
    else:
        assert above != below
        assert above == (price > threshold)


def test_payload_is_the_channel_notice() -> None:
    fired = FiredAlert(
        id="al-" + "1" * 32,
        user_id="u-" + "2" * 32,
        symbol="CPI-1",
        direction="above",
        price_ticks=60,
        trigger_price_ticks=61,
        trigger_trade_id=7,
        triggered_at=datetime(2026, 11, 21, 8, 0, 0, 123456, tzinfo=UTC),
    )
    assert fired.payload() == {
        "type": "alert",
        "alert_id": "al-" + "1" * 32,
        "symbol": "CPI-1",
        "direction": "above",
        "price": 60,
        "trade_price": 61,
        "trade_id": 7,
        "triggered_at": "2026-11-21T08:00:00.123Z",
    }


def test_the_module_imports_no_driver_or_http_client() -> None:
    """The rule is importable without psycopg or httpx (the CLI imports them when it runs)."""
    code = (
        "import sys, functions.alerts\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool', 'httpx'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
