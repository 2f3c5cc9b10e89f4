"""mark_to_market (pure): longs at the mark, shorts at settle_max - mark, times the multiplier.

No network here; it lives beside the orders tests because it is their arithmetic.
"""

from __future__ import annotations

from typing import Any

from functions.routers.orders import mark_to_market


def market(
    last: int | None, *, settle_max: int = 100, mult: int = 1, settled: int | None = None
) -> dict[str, Any]:
    return {
        "settle_max": settle_max,
        "multiplier_minor": mult,
        "settlement_price": settled,
        "last_trade": None if last is None else {"trade_id": 1, "price": last, "quantity": 1, "ts_ms": 0},
    }


def view(cash: int, reserved: int, positions: dict[str, tuple[int, int]]) -> dict[str, Any]:
    return {
        "cash_minor": cash,
        "reserved_minor": reserved,
        "positions": {
            s: {"position": lg - sh, "long": lg, "short": sh, "locked": 0}
            for s, (lg, sh) in positions.items()
        },
    }


def test_long_and_short_with_multiplier_sum_to_deposits() -> None:
    # a scalar market (settle_max 500, 10 minor per tick): alice buys 3 at 200 from bob
    markets = {"SC": market(260, settle_max=500, mult=10)}
    alice = mark_to_market(
        "a", view(10_000 - 3 * 200 * 10, 0, {"SC": (3, 0)}), markets, starting_balance_minor=10_000
    )
    bob = mark_to_market(
        "b", view(10_000 - 3 * 300 * 10, 0, {"SC": (0, 3)}), markets, starting_balance_minor=10_000
    )
    assert alice.positions[0].value_minor == 3 * 260 * 10
    assert bob.positions[0].value_minor == 3 * (500 - 260) * 10
    assert alice.pnl_minor == 3 * 60 * 10
    assert bob.pnl_minor == -3 * 60 * 10
    assert alice.net_worth_minor + bob.net_worth_minor == 20_000


def test_settled_market_marks_at_settlement_and_missing_mark_is_zero() -> None:
    markets = {"B": market(40, settled=100), "N": market(None)}
    pnl = mark_to_market("a", view(500, 25, {"B": (2, 0), "N": (1, 0)}), markets, starting_balance_minor=1000)
    b, n = pnl.positions
    assert (b.mark_price, b.mark_source, b.value_minor) == (100, "settlement", 200)
    assert (n.mark_price, n.mark_source, n.value_minor) == (None, "none", 0)
    assert pnl.net_worth_minor == 500 + 25 + 200
    assert pnl.pnl_minor == 725 - 1000
