"""The market rules of functions/markets.py that need no database (kept here, beside the
integration tests, because they share their ownership; they run in milliseconds)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from functions import markets as m


def test_transitions_follow_the_lifecycle() -> None:
    allowed = {(a, s) for a in m.TRANSITIONS for s in m.STATUSES if m.transition_allowed(a, s)}
    assert allowed == {
        ("approve_market", "requested"),
        ("reject_market", "requested"),
        ("open_market", "approved"),
        ("open_market", "halted"),
        ("halt_market", "open"),
        ("close_market", "open"),
        ("close_market", "halted"),
        ("resolve_market", "closed"),
    }
    # Nothing leaves the final states.
    assert not any(m.transition_allowed(a, s) for a in m.TRANSITIONS for s in ("settled", "rejected"))


def test_political_markets_need_two_admins() -> None:
    assert m.required_approvals("political") == 2
    assert {m.required_approvals(t) for t in m.MARKET_TYPES if t != "political"} == {1}


@pytest.mark.parametrize(
    ("kind", "grid", "ok"),
    [
        ("binary", (1, 1, 99), True),
        ("binary", (1, 0, 100), False),
        ("scalar", (5, 0, 100), True),
        ("scalar", (3, 0, 100), False),
        ("scalar", (1, 10, 10), False),
        ("scalar", (1, 0, m.PRICE_MAX), True),
        ("scalar", (1, 0, m.PRICE_MAX + 1), False),
        ("scalar", (0, 0, 10), False),
    ],
)
def test_bounds(kind: str, grid: tuple[int, int, int], ok: bool) -> None:
    assert (m.bounds_problem(kind, *grid) is None) is ok


def test_settlement_prices() -> None:
    assert m.settlement_problem("binary", 1, 1, 99, 0) is None
    assert m.settlement_problem("binary", 1, 1, 99, 100) is None
    assert m.settlement_problem("binary", 1, 1, 99, 50) is not None
    assert m.settlement_problem("scalar", 5, 10, 100, 15) is None
    assert m.settlement_problem("scalar", 5, 10, 100, 16) is not None
    assert m.settlement_problem("scalar", 5, 10, 100, 105) is not None


def test_title_overlap_threshold() -> None:
    assert m.titles_overlap(["a", "b", "c"], ["a", "b", "c"])
    assert m.titles_overlap(["a", "b", "c", "d"], ["a", "b", "c", "e"]) is True  # 3/5 of the union: exactly
    assert m.titles_overlap(["a", "b", "c"], ["a", "b", "d"]) is False  # 2/4
    assert m.titles_overlap(["a", "b"], ["c", "d"]) is False
    assert m.titles_overlap([], []) is False


def test_cursor_round_trip_and_refusals() -> None:
    ts = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert m.decode_cursor(m.encode_cursor(ts, "US-CPI")) == (ts, "US-CPI")
    for bad in ["", "!!!", "bm90LWEtY3Vyc29y", m.encode_cursor(ts, "bad symbol"), "é"]:
        assert m.decode_cursor(bad) is None, bad
    naive = m.encode_cursor(datetime(2026, 1, 1), "X")
    assert m.decode_cursor(naive) is None
