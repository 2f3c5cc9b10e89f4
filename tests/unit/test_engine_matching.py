"""Matching rules of the engine, one behaviour per test."""

from __future__ import annotations

from orderbook_host.engine import CancelOrder, ExpireOrders, ReplaceOrder
from tests.unit.engine_helpers import SYM, Ex, cancels, trades, types


def test_price_time_priority_and_trade_at_resting_price() -> None:
    t = Ex("a", "b", "c")
    o1 = t.place("a", "sell", 5, 45).ack
    o2 = t.place("b", "sell", 5, 44).ack
    o3 = t.place("a", "sell", 5, 44).ack
    assert o1 and o2 and o3
    out = t.place("c", "buy", 12, 50)
    # Best price first (44), FIFO inside it (o2 before o3), each at the maker's price.
    assert trades(out.events) == [
        (44, 5, o2.server_order_id, out.ack.server_order_id if out.ack else 0),
        (44, 5, o3.server_order_id, out.ack.server_order_id if out.ack else 0),
        (45, 2, o1.server_order_id, out.ack.server_order_id if out.ack else 0),
    ]
    assert out.ack is not None
    assert out.ack.status == "filled" and out.ack.filled_quantity == 12
    assert [(f.price, f.quantity, f.liquidity) for f in out.ack.fills] == [
        (44, 5, "taker"),
        (44, 5, "taker"),
        (45, 2, "taker"),
    ]
    assert [f.trade_id for f in out.ack.fills] == [1, 2, 3]
    assert t.ex.book_levels(SYM, 10) == ([], [[45, 3]])
    assert t.ex.market(SYM)["last_trade"]["price"] == 45  # type: ignore[index]


def test_partial_fill_rests_remainder_and_book_events() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 3, 40)
    out = t.place("b", "buy", 10, 41)
    assert out.ack is not None and out.ack.status == "partially_filled"
    assert out.ack.filled_quantity == 3 and out.ack.remaining_quantity == 7
    books = [e.to_payload() for e in out.events if e.TYPE == "book"]
    assert books == [
        {"type": "book", "symbol": SYM, "side": "sell", "price": 40, "quantity": 0},
        {"type": "book", "symbol": SYM, "side": "buy", "price": 41, "quantity": 7},
    ]
    assert types(out.events)[:2] == ["order_accepted", "trade"]


def test_market_order_sweeps_and_cancels_remainder() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 2, 30)
    t.place("a", "sell", 2, 60)
    out = t.place("b", "buy", 10, order_type="market")
    assert trades(out.events)[0][:2] == (30, 2) and trades(out.events)[1][:2] == (60, 2)
    assert out.ack is not None and out.ack.status == "cancelled" and out.ack.filled_quantity == 4
    assert cancels(out.events) == [(out.ack.server_order_id, "ioc_remainder", 6)]


def test_market_order_respects_protection_price() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 2, 30)
    t.place("a", "sell", 2, 60)
    out = t.place("b", "buy", 10, 50, order_type="market")
    assert [tr[:2] for tr in trades(out.events)] == [(30, 2)]


def test_ioc_limit_cancels_rest() -> None:
    t = Ex("a", "b")
    t.place("a", "buy", 4, 50)
    out = t.place("b", "sell", 6, 50, time_in_force="IOC")
    assert out.ack is not None and (out.ack.status, out.ack.filled_quantity) == ("cancelled", 4)
    assert t.ex.book_levels(SYM) == ([], [])


def test_fok_all_or_nothing() -> None:
    t = Ex("a", "b")
    t.place("a", "buy", 4, 50)
    t.place("a", "buy", 4, 49)
    no = t.place("b", "sell", 9, 49, time_in_force="FOK")
    assert no.code == "fok_not_fillable" and trades(no.events) == []
    assert t.ex.book_levels(SYM)[0] == [[50, 4], [49, 4]]
    yes = t.place("b", "sell", 8, 49, time_in_force="FOK")
    assert yes.ok and yes.ack is not None and yes.ack.status == "filled"


def test_post_only_refused_when_crossing_else_rests() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 4, 50)
    assert t.place("b", "buy", 1, 50, post_only=True).code == "post_only_would_cross"
    out = t.place("b", "buy", 1, 49, post_only=True)
    assert out.ok and out.ack is not None and out.ack.status == "open"


def test_gtd_expires_only_when_told() -> None:
    t = Ex("a")
    out = t.place("a", "buy", 4, 50, time_in_force="GTD", expire_at_ms=500)
    assert out.ack is not None
    assert t.ex.apply(ExpireOrders(499)).events == []
    expired = t.ex.apply(ExpireOrders(500))
    assert cancels(expired.events) == [(out.ack.server_order_id, "expired", 4)]
    assert t.ex.book_levels(SYM) == ([], []) and t.cash("a") == (100_000, 0)


def test_cancel_releases_and_second_cancel_is_order_not_open() -> None:
    t = Ex("a")
    ack = t.place("a", "buy", 4, 50).ack
    assert ack is not None
    out = t.ex.apply(CancelOrder("a", ack.server_order_id, 20))
    assert out.ok and cancels(out.events) == [(ack.server_order_id, "user", 4)]
    assert t.cash("a") == (100_000, 0)
    assert t.ex.apply(CancelOrder("a", ack.server_order_id, 21)).code == "order_not_open"


def test_replace_reduce_keeps_priority_and_increase_loses_it() -> None:
    t = Ex("a", "b", "c")
    first = t.place("a", "buy", 5, 50).ack
    second = t.place("b", "buy", 5, 50).ack
    assert first and second
    out = t.ex.apply(ReplaceOrder("a", first.server_order_id, 3, 20))
    assert out.ok and t.cash("a") == (100_000 - 150, 150)
    hit = t.place("c", "sell", 1, 50)
    assert trades(hit.events)[0][2] == first.server_order_id  # still first in line
    t.ex.apply(ReplaceOrder("a", first.server_order_id, 9, 21))  # increase: back of the queue
    hit = t.place("c", "sell", 1, 50)
    assert trades(hit.events)[0][2] == second.server_order_id


def test_replace_to_crossing_price_trades_at_once() -> None:
    t = Ex("a", "b")
    t.place("a", "sell", 2, 55)
    ack = t.place("b", "buy", 5, 50).ack
    assert ack is not None
    out = t.ex.apply(ReplaceOrder("b", ack.server_order_id, 5, 20, price=56))
    assert out.ok and trades(out.events) == [(55, 2, 1, ack.server_order_id)]
    assert t.ex.book_levels(SYM) == ([[56, 3]], [])
    assert t.cash("b") == (100_000 - 110 - 3 * 56, 3 * 56)


def test_stp_cancel_oldest_is_default() -> None:
    t = Ex("a", "b")
    own = t.place("a", "sell", 3, 50).ack
    other = t.place("b", "sell", 3, 50).ack
    assert own and other
    out = t.place("a", "buy", 3, 50)
    assert cancels(out.events) == [(own.server_order_id, "stp", 3)]
    assert trades(out.events)[0][2] == other.server_order_id


def test_stp_cancel_newest_keeps_resting() -> None:
    t = Ex("a")
    own = t.place("a", "sell", 3, 50).ack
    out = t.place("a", "buy", 5, 50, stp="cancel_newest")
    assert out.ack is not None and out.ack.status == "cancelled"
    assert cancels(out.events) == [(out.ack.server_order_id, "stp", 5)]
    assert own and t.ex.get_order(own.server_order_id) is not None


def test_stp_cancel_both() -> None:
    t = Ex("a")
    own = t.place("a", "sell", 3, 50).ack
    out = t.place("a", "buy", 5, 50, stp="cancel_both")
    assert own and out.ack
    assert cancels(out.events) == [(own.server_order_id, "stp", 3), (out.ack.server_order_id, "stp", 5)]
    assert t.ex.book_levels(SYM) == ([], []) and t.cash("a") == (100_000, 0)


def test_stp_decrement_shrinks_both_without_trading() -> None:
    t = Ex("a", "b")
    own = t.place("a", "sell", 3, 50).ack
    t.place("b", "sell", 4, 50)
    out = t.place("a", "buy", 5, 50, stp="decrement")
    assert own and out.ack
    assert cancels(out.events) == [(own.server_order_id, "stp", 3), (out.ack.server_order_id, "stp", 3)]
    assert [tr[:2] for tr in trades(out.events)] == [(50, 2)]
    assert out.ack.status == "cancelled" and out.ack.filled_quantity == 2
    assert t.ex.book_levels(SYM) == ([], [[50, 2]])


def test_halt_keeps_book_close_cancels_everything() -> None:
    from orderbook_host.engine import SetMarketStatus

    t = Ex("a")
    ack = t.place("a", "buy", 4, 50).ack
    assert ack is not None
    assert t.ex.apply(SetMarketStatus(SYM, "halted", 20)).ok
    assert t.ex.book_levels(SYM) == ([[50, 4]], [])
    assert t.place("a", "buy", 1, 50).code == "market_not_open"
    assert t.ex.apply(SetMarketStatus(SYM, "open", 21)).ok
    out = t.ex.apply(SetMarketStatus(SYM, "closed", 22))
    assert cancels(out.events) == [(ack.server_order_id, "market_closed", 4)]
    assert t.cash("a") == (100_000, 0) and t.ex.market(SYM)["status"] == "closed"  # type: ignore[index]


def test_duplicate_client_order_id_returns_first_order() -> None:
    t = Ex("a", "b")
    first = t.place("a", "buy", 4, 50, client_order_id="abc-1")
    again = t.place("a", "buy", 9, 51, client_order_id="abc-1")
    assert first.ack and again.ack
    assert again.ack.duplicate and again.ack.server_order_id == first.ack.server_order_id
    assert again.ack.status == "open" and types(again.events) == ["order_duplicate"]
    assert t.ex.book_levels(SYM) == ([[50, 4]], [])
    # Another account may use the same client id; a rejected order does not claim it.
    assert t.place("b", "buy", 1, 50, client_order_id="abc-1").ack.duplicate is False  # type: ignore[union-attr]
    assert t.place("a", "buy", 1, 0, client_order_id="zz").code == "invalid_price"
    assert t.place("a", "buy", 1, 50, client_order_id="zz").ok


def test_open_orders_stay_exact_while_the_account_list_drops_dead_records() -> None:
    """An account's resting orders are a list with dead records dropped lazily: whatever mix of
    fills, cancels and replaces removed them, open_orders lists exactly the resting ones, oldest
    id first, and the list does not keep growing with orders that have left the book."""
    t = Ex("a", "b", cash_minor=10**9)
    ids = []
    for i in range(200):
        ack = t.place("a", "buy", 2, 10 + i % 30).ack
        assert ack is not None
        ids.append(ack.server_order_id)
    for oid in ids[:150]:
        assert t.ex.apply(CancelOrder("a", oid, 99)).ok
    # A replace that moves the price re-queues the order under its old id.
    assert t.ex.apply(ReplaceOrder("a", ids[160], 3, 99, price=5)).ok
    out = t.place("b", "sell", 2 * 20, 10)  # fills the 20 best bids
    assert len(trades(out.events)) == 20
    resting = t.ex.open_orders("a")
    expected = sorted(oid for oid in ids[150:] if t.ex.get_order(oid) is not None)
    assert len(expected) == 30 and ids[160] in expected
    assert [o["server_order_id"] for o in resting] == expected
    assert all(o["remaining_quantity"] > 0 for o in resting)
    records = t.ex.accounts["a"].orders
    assert len(records) <= 2 * len(expected) + 17
