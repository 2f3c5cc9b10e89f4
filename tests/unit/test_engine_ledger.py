"""Accounts, reservations, collateral and settlement."""

from __future__ import annotations

from orderbook_host.engine import CancelOrder, CreateMarket, Deposit, ResolveMarket, Withdraw
from tests.unit.engine_helpers import SYM, Ex, types


def test_buy_reserves_price_times_quantity_and_returns_excess_on_fill() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 5, 40)
    out = t.place("b", "buy", 5, 45)
    # Reserved 45 * 5 = 225 at acceptance, paid 40 * 5 = 200; the excess 25 came back.
    assert t.cash("b") == (100_000 - 200, 0) and t.position("b") == 5
    assert "balance" in types(out.events) and "position" in types(out.events)


def test_short_sale_locks_collateral_and_binary_pair_is_fully_collateralised() -> None:
    t = Ex("long", "short")
    t.place("short", "sell", 10, 30)  # no position: collateral (100 - 30) * 10
    assert t.cash("short") == (100_000 - 700, 700)
    t.place("long", "buy", 10, 30)
    assert t.cash("short") == (100_000 - 700, 0) and t.position("short") == -10
    assert t.cash("long") == (100_000 - 300, 0) and t.position("long") == 10
    # A contract pair holds exactly 100 per contract.
    assert (200_000 - sum(sum(t.cash(a)) for a in ("long", "short"))) == 100 * 10


def test_selling_a_long_position_locks_it_instead_of_cash() -> None:
    t = Ex("a", "b")
    t.place("b", "sell", 4, 50)
    t.place("a", "buy", 4, 50)
    ack = t.place("a", "sell", 4, 60).ack
    assert ack is not None and t.cash("a") == (100_000 - 200, 0)
    assert t.ex.account("a")["positions"][SYM]["locked"] == 4  # type: ignore[index]
    t.ex.apply(CancelOrder("a", ack.server_order_id, 30))
    assert t.ex.account("a")["positions"][SYM]["locked"] == 0  # type: ignore[index]


def test_buying_back_a_short_returns_collateral() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 4, 30)
    t.place("b", "buy", 4, 30)  # a is short 4, 280 collateral spent
    t.place("b", "sell", 4, 20)
    t.place("a", "buy", 4, 20)  # a covers at 20: gets 100 - 20 back per contract
    assert t.position("a") == 0 and t.cash("a") == (100_000 - 280 + 320, 0)
    assert t.position("b") == 0 and t.cash("b") == (100_000 - 120 + 80, 0)


def test_settlement_pays_positions_and_conserves_cash() -> None:
    t = Ex("a", "b", "c")
    t.place("a", "sell", 10, 30)
    t.place("b", "buy", 6, 30)
    t.place("c", "buy", 4, 35)
    t.place("c", "buy", 3, 20)  # rests, reserved 60
    out = t.ex.apply(ResolveMarket(SYM, 100, 50))
    assert out.ok and "market_settled" in types(out.events)
    assert t.cash("a") == (100_000 - 700, 0)
    assert t.cash("b") == (100_000 - 180 + 600, 0)
    assert t.cash("c") == (100_000 - 120 + 400, 0)
    assert sum(sum(t.cash(x)) for x in "abc") == 300_000
    assert t.position("b") == 0 and t.ex.market(SYM)["status"] == "settled"  # type: ignore[index]
    assert t.place("b", "buy", 1, 50).code == "market_not_open"


def test_scalar_market_with_multiplier_settles_inside_bounds() -> None:
    t = Ex("a", "b", kind="scalar", tick_size=5, price_min=100, price_max=300, multiplier_minor=10)
    assert t.place("a", "buy", 2, 102).code == "invalid_price"  # off the grid
    t.place("a", "buy", 2, 150)
    assert t.cash("a") == (100_000 - 3_000, 3_000)
    t.place("b", "sell", 2, 150)  # collateral (300 - 150) * 10 * 2
    assert t.cash("b") == (100_000 - 3_000, 0)
    assert t.ex.apply(ResolveMarket(SYM, 201, 9)).code == "invalid_price"
    assert t.ex.apply(ResolveMarket(SYM, 200, 9)).ok
    assert t.cash("a") == (100_000 - 3_000 + 4_000, 0)
    assert t.cash("b") == (100_000 - 3_000 + 2_000, 0)


def test_no_shorting_market_requires_position() -> None:
    t = Ex("a", kind="scalar", price_min=1, price_max=1000, allow_short=False)
    assert t.place("a", "sell", 1, 500).code == "insufficient_position"


def test_withdraw_only_free_cash() -> None:
    t = Ex("a", cash_minor=1_000)
    t.place("a", "buy", 10, 60)  # 600 reserved
    assert t.ex.apply(Withdraw("a", 401, 1)).code == "insufficient_funds"
    assert t.ex.apply(Withdraw("a", 400, 1)).ok and t.cash("a") == (0, 600)
    assert t.place("a", "buy", 1, 1).code == "insufficient_funds"
    assert t.ex.apply(Deposit("a", 5, 2)).ok and t.place("a", "buy", 1, 5).ok


def test_market_buy_reserves_against_protection_or_max_price() -> None:
    t = Ex("a", "b", cash_minor=1_000)
    t.place("b", "sell", 1, 10)
    assert t.place("a", "buy", 11, order_type="market").code == "insufficient_funds"  # 11 * 99
    out = t.place("a", "buy", 11, 50, order_type="market")  # 11 * 50 = 550 fits
    assert out.ok and t.cash("a") == (1_000 - 10, 0)


def test_second_market_on_same_exchange_is_independent() -> None:
    t = Ex("a")
    assert t.ex.apply(CreateMarket("OTHER", "binary", 0)).ok
    t.place("a", "buy", 1, 50, symbol="OTHER")
    assert t.ex.book_levels(SYM) == ([], []) and t.ex.book_levels("OTHER") == ([[50, 1]], [])
    assert len(t.ex.open_orders("a")) == 1 and t.ex.open_orders("a")[0]["symbol"] == "OTHER"
