"""WAL encoding of commands, snapshots, state hashes, and the core's purity."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from orderbook_host.engine import (
    CancelOrder,
    Command,
    CommandDecodeError,
    CreateMarket,
    Deposit,
    Exchange,
    ExpireOrders,
    PlaceOrder,
    ReplaceOrder,
    ResolveMarket,
    SetMarketStatus,
    Withdraw,
    decode_command,
    encode_command,
)
from tests.unit.engine_helpers import SYM, Ex

ALL_COMMANDS: list[Command] = [
    CreateMarket(
        "ABC", "scalar", 1, tick_size=5, price_min=10, price_max=200, multiplier_minor=3, allow_short=False
    ),
    SetMarketStatus("ABC", "halted", 2),
    ResolveMarket("ABC", 100, 3),
    Deposit("ä-account", 10, 4),
    Withdraw("a", 5, 5),
    PlaceOrder(
        7,
        "a",
        "ABC",
        "sell",
        3,
        6,
        order_type="limit",
        price=15,
        time_in_force="GTD",
        post_only=True,
        client_order_id="cid-1",
        expire_at_ms=99,
        stp="decrement",
    ),
    PlaceOrder(8, "a", "ABC", "buy", 3, 6),
    CancelOrder("a", 7, 8),
    ReplaceOrder("a", 7, 2, 9, price=20),
    ExpireOrders(10),
]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_command_round_trip(cmd: Command) -> None:
    data = encode_command(cmd)
    assert data.startswith(b"[1,")
    assert decode_command(data) == cmd


@pytest.mark.parametrize(
    "data", [b"", b"{}", b'[2,"po"]', b'[1,"zz"]', b'[1,"ex"]', b'[1,"ex",1,2]', b"\xff"]
)
def test_decode_refuses_garbage(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode_command(data)


def _busy_exchange() -> Ex:
    t = Ex("a", "b", "c")
    t.place("a", "sell", 5, 55, client_order_id="s1")
    t.place("a", "sell", 5, 55, time_in_force="GTD", expire_at_ms=10_000)
    t.place("b", "buy", 3, 55)
    t.place("c", "buy", 2, 40)
    t.place("b", "buy", 2, 40)
    return t


def test_restore_of_snapshot_hashes_equal_and_behaves_the_same() -> None:
    t = _busy_exchange()
    restored = Exchange.restore(t.ex.snapshot())
    assert restored.state_hash() == t.ex.state_hash()
    assert restored.book_levels(SYM) == t.ex.book_levels(SYM)
    more: list[Command] = [
        PlaceOrder(100, "c", SYM, "sell", 6, 50, price=40),
        ExpireOrders(10_000),
        PlaceOrder(101, "a", SYM, "buy", 1, 51, client_order_id="s1"),
    ]
    for cmd in more:
        a, b = t.ex.apply(cmd), restored.apply(cmd)
        assert [e.to_payload() for e in a.events] == [e.to_payload() for e in b.events]
        assert a.ack == b.ack
    assert restored.state_hash() == t.ex.state_hash()


def test_state_hash_ignores_history_that_left_no_trace() -> None:
    # Same final state reached two ways: accounts created in another order, an order placed and cancelled.
    one, two = Exchange(), Exchange()
    for ex, accounts in ((one, ("a", "b")), (two, ("b", "a"))):
        ex.apply(CreateMarket(SYM, "binary", 0))
        for acct in accounts:
            ex.apply(Deposit(acct, 1_000, 0))
    two.apply(PlaceOrder(1, "a", SYM, "buy", 1, 1, price=10))
    two.apply(CancelOrder("a", 1, 2))
    one.apply(PlaceOrder(1, "b", SYM, "buy", 1, 1, price=10, time_in_force="IOC"))
    assert one.state_hash() == two.state_hash()
    one.apply(Deposit("a", 1, 3))
    assert one.state_hash() != two.state_hash()


def test_snapshot_holds_dedup_table_and_counters() -> None:
    t = _busy_exchange()
    restored = Exchange.restore(t.ex.snapshot())
    assert restored.lookup_client_order("a", "s1") == 1
    assert restored.next_order_id == t.ex.next_order_id and restored.trade_seq == t.ex.trade_seq
    assert restored.open_orders("a") == t.ex.open_orders("a")
    assert restored.account("b") == t.ex.account("b")
    assert restored.market(SYM) == t.ex.market(SYM)


def test_event_payloads_are_json_with_type() -> None:
    import json

    t = Ex("a", "b")
    t.place("a", "sell", 5, 55)
    out = t.place("b", "buy", 3, 55, client_order_id="x")
    for e in out.events:
        payload = e.to_payload()
        assert payload["type"] == e.TYPE
        json.dumps(payload)
    assert out.ack is not None
    assert json.loads(json.dumps(out.ack.to_payload()))["fills"][0]["liquidity"] == "taker"


def test_engine_imports_only_the_standard_library() -> None:
    """And orjson: a pure codec (no I/O, clock or randomness) for the WAL command records."""
    engine_dir = Path(__file__).resolve().parents[2] / "orderbook_host" / "engine"
    allowed = set(sys.stdlib_module_names) | {"orderbook_host", "orjson"}
    for path in engine_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, (path.name, name)
            assert not any(
                n.split(".")[0] in {"time", "random", "logging", "datetime", "os"} for n in names
            ), path


def test_snapshot_bytes_are_the_standard_compact_json_and_big_ints_still_encode() -> None:
    ex = Exchange()
    assert ex.apply(CreateMarket("ETE-2026", "binary", 1)).code is None
    for account in ("zoë", "línea\ttab", "line\u2028sep", "ascii"):
        assert ex.apply(Deposit(account, 10**15, 1)).code is None
    canonical = ex._canonical()
    assert ex.snapshot() == json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()
    for _ in range(10_000):  # past 2**63 minor units: orjson refuses, the fallback writes it
        assert ex.apply(Deposit("whale", 10**15, 2)).code is None
    data = ex.snapshot()
    assert data == json.dumps(ex._canonical(), separators=(",", ":"), ensure_ascii=False).encode()
    restored = Exchange.restore(data)
    assert restored.state_hash() == ex.state_hash()
    assert restored.account("whale")["cash_minor"] == 10**19  # type: ignore[index]
