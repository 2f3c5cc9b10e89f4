"""Property tests: the fast engine against the naive reference book, and ledger invariants.

Runs random command streams over three accounts and three markets (two binary, one scalar
with a tick of 5 and a multiplier of 2) and checks, after every command: the book is never
crossed; each level holds its orders in arrival order (the reference sorts by arrival);
trades, cancels and acks equal the reference's; cash is conserved across all accounts
(including settlement); nothing goes negative; reservations equal what open orders need;
every order's quantity is filled + open + cancelled; snapshot/restore mid-stream continues
exactly like never snapshotting.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderbook_host.engine import (
    CancelOrder,
    Command,
    Deposit,
    Exchange,
    ExpireOrders,
    OrderAccepted,
    OrderCancelled,
    OrderReplaced,
    PlaceOrder,
    ReplaceOrder,
    Trade,
    Withdraw,
    decode_command,
    encode_command,
)
from orderbook_host.engine.book import SIDE_NAMES
from tests.property.engine_streams import (
    BOUNDS,
    MARKETS,
    Driver,
    Op,
    check_invariants,
    fix_replace_price,
    ledger_ops,
    matching_ops,
    random_ops,
)
from tests.property.reference import ReferenceBook, RefResult

RICH_MINOR = 10**12


def _apply_reference(ref: ReferenceBook, cmd: Command) -> RefResult:
    if isinstance(cmd, PlaceOrder):
        return ref.place(
            cmd.server_order_id,
            cmd.account,
            cmd.symbol,
            cmd.side,
            cmd.quantity,
            cmd.order_type,
            cmd.price,
            cmd.time_in_force,
            cmd.post_only,
            cmd.expire_at_ms,
            cmd.stp,
        )
    if isinstance(cmd, CancelOrder):
        return ref.cancel(cmd.account, cmd.server_order_id)
    if isinstance(cmd, ReplaceOrder):
        return ref.replace(cmd.account, cmd.server_order_id, cmd.quantity, cmd.price)
    assert isinstance(cmd, ExpireOrders)
    return ref.expire(cmd.now_ms)


@given(matching_ops)
def test_fast_book_equals_reference(ops: list[Op]) -> None:
    run_reference_comparison(ops)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_book_equals_reference_on_long_seeded_streams(seed: int) -> None:
    ops = [
        op
        for op in random_ops(random.Random(seed), 1500)
        if op.kind in ("place", "cancel", "replace", "expire")
    ]
    run_reference_comparison(ops)


def run_reference_comparison(ops: list[Op]) -> None:
    drv = Driver(RICH_MINOR)
    ex = Exchange()
    for cmd in drv.setup():
        assert ex.apply(cmd).ok
    ref = ReferenceBook(BOUNDS)
    seen_coids: set[tuple[str, str]] = set()
    for op in ops:
        cmd = fix_replace_price(ex, drv.command(op))
        out = ex.apply(cmd)
        if isinstance(cmd, PlaceOrder) and cmd.client_order_id is not None:
            key = (cmd.account, cmd.client_order_id)
            if key in seen_coids:
                # Duplicates never reach the book; the reference is not told about them.
                assert out.ack is not None and out.ack.duplicate
                continue
        want = _apply_reference(ref, cmd)
        trades = [
            (e.symbol, e.price, e.quantity, e.maker_order_id, e.taker_order_id)
            for e in out.events
            if isinstance(e, Trade)
        ]
        cancels = [
            (e.server_order_id, e.reason, e.cancelled_quantity)
            for e in out.events
            if isinstance(e, OrderCancelled)
        ]
        assert out.code == want.code, (cmd, out.code, want.code)
        assert trades == want.trades, cmd
        assert cancels == want.cancels, cmd
        if isinstance(cmd, PlaceOrder):
            assert out.ack is not None
            assert (out.ack.status, out.ack.filled_quantity) == (want.status, want.filled), cmd
            if out.ok and cmd.client_order_id is not None:
                seen_coids.add((cmd.account, cmd.client_order_id))
        for sym in MARKETS:
            bids, asks = ex.book_levels(sym, 1000)
            assert bids == ref.levels(sym, "buy"), sym
            assert asks == ref.levels(sym, "sell"), sym
            # FIFO: the fast book's queue at each price is the reference's arrival order.
            for side_code, side in ((0, ex.markets[sym].book.bids), (1, ex.markets[sym].book.asks)):
                for price, level in side.levels.items():
                    want_oids = [
                        o.oid
                        for o in sorted(ref.orders, key=lambda o: o.seq)
                        if o.symbol == sym and o.side == SIDE_NAMES[side_code] and o.price == price
                    ]
                    assert [o.oid for o in level.live()] == want_oids
        check_invariants(ex, 3 * RICH_MINOR)


@given(ledger_ops)
def test_ledger_invariants_and_quantity_conservation(ops: list[Op]) -> None:
    run_ledger(ops)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_ledger_invariants_on_long_seeded_streams(seed: int) -> None:
    run_ledger(random_ops(random.Random(seed), 1500), cash_minor=6000)


def run_ledger(ops: list[Op], cash_minor: int = 1500) -> None:
    drv = Driver(cash_minor)
    ex = Exchange()
    net_minor = 0
    for cmd in drv.setup():
        ex.apply(cmd)
        if isinstance(cmd, Deposit):
            net_minor += cmd.amount_minor
    submitted: dict[int, int] = {}
    filled: dict[int, int] = {}
    cancelled: dict[int, int] = {}
    for op in ops:
        cmd = fix_replace_price(ex, drv.command(op))
        out = ex.apply(cmd)
        if out.ok and isinstance(cmd, Deposit):
            net_minor += cmd.amount_minor
        if out.ok and isinstance(cmd, Withdraw):
            net_minor -= cmd.amount_minor
        for e in out.events:
            if isinstance(e, OrderAccepted):
                submitted[e.server_order_id] = e.quantity
            elif isinstance(e, Trade):
                for oid in (e.maker_order_id, e.taker_order_id):
                    filled[oid] = filled.get(oid, 0) + e.quantity
            elif isinstance(e, OrderCancelled):
                cancelled[e.server_order_id] = cancelled.get(e.server_order_id, 0) + e.cancelled_quantity
            elif isinstance(e, OrderReplaced):
                # A replace re-states the open quantity: the difference is withdrawn or added.
                cancelled[e.server_order_id] = (
                    cancelled.get(e.server_order_id, 0) + e.old_quantity - e.quantity
                )
        check_invariants(ex, net_minor)
        for oid, qty in submitted.items():
            o = ex.orders.get(oid)
            open_qty = o.remaining if o is not None else 0
            assert filled.get(oid, 0) + open_qty + cancelled.get(oid, 0) == qty, oid
            if o is not None:
                assert o.filled == filled.get(oid, 0)


@given(ledger_ops, st.integers(0, 80))
def test_snapshot_restore_mid_stream_equals_never_snapshotting(ops: list[Op], cut: int) -> None:
    run_snapshot(ops, cut)


@pytest.mark.parametrize("seed", [7, 8])
def test_snapshot_restore_on_long_seeded_streams(seed: int) -> None:
    rng = random.Random(seed)
    run_snapshot(random_ops(rng, 1500), rng.randint(300, 1200))


def run_snapshot(ops: list[Op], cut: int) -> None:
    drv_a, drv_b = Driver(1500), Driver(1500)
    live, other = Exchange(), Exchange()
    for cmd in drv_a.setup():
        live.apply(cmd)
    for cmd in drv_b.setup():
        other.apply(cmd)
    for i, op in enumerate(ops):
        if i == cut:
            blob = other.snapshot()
            restored = Exchange.restore(blob)
            assert restored.state_hash() == other.state_hash() == live.state_hash()
            assert restored.snapshot() == blob
            other = restored
        cmd_a = fix_replace_price(live, drv_a.command(op))
        cmd_b = fix_replace_price(other, drv_b.command(op))
        assert cmd_a == cmd_b
        # The restored engine also replays from WAL bytes.
        out_a = live.apply(cmd_a)
        out_b = other.apply(decode_command(encode_command(cmd_b)))
        assert [e.to_payload() for e in out_a.events] == [e.to_payload() for e in out_b.events]
        assert out_a.code == out_b.code and out_a.ack == out_b.ack
    assert live.state_hash() == other.state_hash()
    assert live.snapshot() == other.snapshot()
