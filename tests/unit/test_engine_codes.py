"""Every reject code is reachable, returned as a value, and leaves the state unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from orderbook_host.engine import (
    CancelOrder,
    Command,
    CreateMarket,
    Deposit,
    Notify,
    Outcome,
    PlaceOrder,
    ReplaceOrder,
    ResolveMarket,
    SetMarketStatus,
    Withdraw,
    codes,
)
from tests.unit.engine_helpers import SYM, Ex


def _po(t: Ex, **kw: object) -> Command:
    args: dict[str, object] = {
        "account": "a",
        "symbol": SYM,
        "side": "buy",
        "quantity": 1,
        "ts_ms": 100,
        "price": 50,
    }
    args.update(kw)
    return PlaceOrder(server_order_id=t.ex.next_order_id, **args)  # type: ignore[arg-type]


def _with_resting(t: Ex) -> int:
    ack = t.place("b", "sell", 5, 60).ack
    assert ack is not None
    return ack.server_order_id


CASES: dict[str, Callable[[Ex], Command]] = {
    codes.UNKNOWN_SYMBOL: lambda t: _po(t, symbol="NOPE"),
    codes.UNKNOWN_ACCOUNT: lambda t: _po(t, account="nobody"),
    codes.MARKET_EXISTS: lambda t: CreateMarket(SYM, "binary", 0),
    codes.INVALID_MARKET: lambda t: CreateMarket("bad symbol", "binary", 0),
    codes.MARKET_NOT_OPEN: lambda t: (t.ex.apply(SetMarketStatus(SYM, "halted", 1)), _po(t))[1],
    codes.INVALID_STATUS_TRANSITION: lambda t: SetMarketStatus(SYM, "open", 1),
    codes.INVALID_PRICE: lambda t: _po(t, price=100),
    codes.INVALID_QUANTITY: lambda t: _po(t, quantity=0),
    codes.INVALID_AMOUNT: lambda t: Deposit("a", -5, 1),
    codes.INVALID_ORDER: lambda t: _po(t, side="up"),
    codes.INVALID_EXPIRY: lambda t: _po(t, time_in_force="GTD", expire_at_ms=50),
    codes.INVALID_ORDER_ID: lambda t: PlaceOrder(0, "a", SYM, "buy", 1, 1, price=50),
    codes.INSUFFICIENT_FUNDS: lambda t: _po(t, quantity=10_000, price=99),
    codes.INSUFFICIENT_POSITION: lambda t: (
        t.ex.apply(CreateMarket("NOSHORT", "scalar", 0, price_min=1, price_max=10, allow_short=False)),
        _po(t, symbol="NOSHORT", side="sell", price=5),
    )[1],
    codes.POST_ONLY_WOULD_CROSS: lambda t: (_with_resting(t), _po(t, price=60, post_only=True))[1],
    codes.FOK_NOT_FILLABLE: lambda t: (_with_resting(t), _po(t, price=60, quantity=6, time_in_force="FOK"))[
        1
    ],
    codes.ORDER_NOT_OPEN: lambda t: CancelOrder("a", 12345, 1),
    codes.NOT_OWNER: lambda t: CancelOrder("a", _with_resting(t), 1),
    codes.INVALID_MESSAGE: lambda t: Notify("a", "[1]", 1),
}


def _state_without_id_counter(t: Ex) -> dict[str, object]:
    state: dict[str, object] = json.loads(t.ex.snapshot())
    state.pop("last_order_id")
    return state


def test_every_code_has_a_case() -> None:
    assert set(CASES) == set(codes.ALL_CODES)


@pytest.mark.parametrize("code", sorted(CASES))
def test_reject_code_is_a_value_and_changes_nothing(code: str) -> None:
    t = Ex("a", "b", cash_minor=10_000)
    cmd = CASES[code](t)
    before = t.ex.state_hash()
    before_state = _state_without_id_counter(t)
    out: Outcome = t.ex.apply(cmd)
    assert out.code == code
    if isinstance(cmd, PlaceOrder):
        assert out.ack is not None and out.ack.status == "rejected" and out.ack.code == code
        assert [e.TYPE for e in out.events] == ["order_rejected"]
        # Only the order id counter may move (ids must keep rising).
        assert _state_without_id_counter(t) == before_state
    else:
        assert out.events == [] and t.ex.state_hash() == before


def test_other_commands_reject_as_values() -> None:
    t = Ex("a")
    assert t.ex.apply(Withdraw("ghost", 1, 1)).code == codes.UNKNOWN_ACCOUNT
    assert t.ex.apply(ResolveMarket(SYM, 50, 1)).code == codes.INVALID_PRICE
    assert t.ex.apply(ReplaceOrder("a", 999, 1, 1)).code == codes.ORDER_NOT_OPEN
    assert (
        t.ex.apply(_po(t, order_type="market", time_in_force="GTD", expire_at_ms=500)).code
        == codes.INVALID_ORDER
    )
    assert t.ex.apply(_po(t, post_only=True, time_in_force="IOC")).code == codes.INVALID_ORDER
    assert t.ex.apply(_po(t, expire_at_ms=500)).code == codes.INVALID_EXPIRY
    assert (
        t.ex.apply(CreateMarket("X", "scalar", 0, tick_size=3, price_min=0, price_max=10)).code
        == codes.INVALID_MARKET
    )


def test_a_refused_order_leaves_the_order_id_unused() -> None:
    """A refusal changes no state: the host logs nothing for it, so a restart must agree."""
    from orderbook_host.engine import CreateMarket, Deposit, Exchange, PlaceOrder

    ex = Exchange()
    ex.apply(CreateMarket("AAA", "binary", ts_ms=0))
    ex.apply(Deposit("alice", 1_000, ts_ms=0))
    before = ex.state_hash()
    out = ex.apply(PlaceOrder(ex.next_order_id, "alice", "AAA", "buy", 1_000, ts_ms=1, price=50))
    assert out.code == "insufficient_funds"
    assert ex.state_hash() == before
    assert ex.next_order_id == 1


def test_notify_delivers_a_notice_and_changes_no_state() -> None:
    import json

    from orderbook_host.engine import Deposit, Exchange, Notice, Notify, decode_command, encode_command

    ex = Exchange()
    ex.apply(Deposit("alice", 10, ts_ms=0))
    before = ex.state_hash()
    cmd = Notify("alice", json.dumps({"kind": "alert", "price": 42}), ts_ms=5)
    assert decode_command(encode_command(cmd)) == cmd
    out = ex.apply(cmd)
    assert out.code is None and ex.state_hash() == before
    assert [e.to_payload() for e in out.events] == [
        {"type": "notice", "account": "alice", "message": {"kind": "alert", "price": 42}}
    ]
    assert isinstance(out.events[0], Notice)
    assert ex.apply(Notify("nobody", "{}", ts_ms=5)).code == "unknown_account"
    for bad in ("[1]", "not json", json.dumps({"x": "y" * 5000})):
        assert ex.apply(Notify("alice", bad, ts_ms=5)).code == "invalid_message"
