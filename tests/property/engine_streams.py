"""Random command streams for the engine's property tests, and invariant checks.

Ops are abstract (indices into earlier orders instead of ids) so that hypothesis can shrink
them; ``Driver`` turns each op into a concrete command with rising ids and times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from orderbook_host.engine import (
    CancelOrder,
    Command,
    CreateMarket,
    Deposit,
    Exchange,
    ExpireOrders,
    PlaceOrder,
    ReplaceOrder,
    ResolveMarket,
    SetMarketStatus,
    Withdraw,
)
from orderbook_host.engine.book import BUY

ACCOUNTS = ("a", "b", "c")
# symbol -> (kind, price_min, price_max, tick, multiplier)
MARKETS: dict[str, tuple[str, int, int, int, int]] = {
    "BIN-1": ("binary", 1, 99, 1, 1),
    "BIN-2": ("binary", 1, 99, 1, 3),
    "SCL-1": ("scalar", 100, 200, 5, 2),
}
BOUNDS = {sym: (pmin, pmax) for sym, (_, pmin, pmax, _, _) in MARKETS.items()}


@dataclass(frozen=True)
class Op:
    kind: str
    args: tuple[Any, ...]


def _price(sym: str, k: int) -> int:
    _, pmin, pmax, tick, _ = MARKETS[sym]
    # Cluster prices near the middle so books cross often.
    mid = (pmin + pmax) // 2
    return min(pmax, max(pmin, mid + (k - 5) * tick))


place_op = st.builds(
    lambda acct, sym, side, qty, k, typ, tif, post, stp, exp, coid: Op(
        "place", (acct, sym, side, qty, _price(sym, k), typ, tif, post, stp, exp, coid)
    ),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(sorted(MARKETS)),
    st.sampled_from(("buy", "sell")),
    st.integers(1, 12),
    st.integers(3, 7),
    st.sampled_from(("limit", "limit", "limit", "market")),
    st.sampled_from(("GTC", "GTC", "IOC", "FOK", "GTD")),
    st.booleans(),
    st.sampled_from(("cancel_oldest", "cancel_newest", "cancel_both", "decrement")),
    st.integers(1, 30),
    st.sampled_from((None, "u", "u", "x1", "x2")),
)
cancel_op = st.builds(lambda i, own: Op("cancel", (i, own)), st.integers(0, 200), st.booleans())
replace_op = st.builds(
    lambda i, qty, k, move: Op("replace", (i, qty, k, move)),
    st.integers(0, 200),
    st.integers(1, 12),
    st.integers(0, 10),
    st.booleans(),
)
expire_op = st.builds(lambda dt: Op("expire", (dt,)), st.integers(0, 20))
matching_ops = st.lists(
    st.one_of(place_op, place_op, place_op, cancel_op, replace_op, expire_op), min_size=10, max_size=80
)

deposit_op = st.builds(
    lambda acct, amt: Op("deposit", (acct, amt)), st.sampled_from(ACCOUNTS), st.integers(1, 2000)
)
withdraw_op = st.builds(
    lambda acct, amt: Op("withdraw", (acct, amt)), st.sampled_from(ACCOUNTS), st.integers(1, 2000)
)
status_op = st.builds(
    lambda sym, status: Op("status", (sym, status)),
    st.sampled_from(sorted(MARKETS)),
    st.sampled_from(("open", "halted", "open", "halted", "closed")),
)
resolve_op = st.builds(
    lambda sym, hi: Op("resolve", (sym, hi)), st.sampled_from(sorted(MARKETS)), st.booleans()
)
ledger_ops = st.lists(
    st.one_of(
        *([place_op] * 12),
        cancel_op,
        cancel_op,
        replace_op,
        expire_op,
        deposit_op,
        withdraw_op,
        status_op,
        resolve_op,
    ),
    min_size=10,
    max_size=80,
)


class Driver:
    """Turns abstract ops into commands with rising ids and times."""

    def __init__(self, cash_minor: int) -> None:
        self.ts_ms = 1000
        self.next_oid = 1
        self.placed: list[tuple[int, str]] = []  # (oid, account)
        self.cash_minor = cash_minor

    def setup(self) -> list[Command]:
        cmds: list[Command] = []
        for sym, (kind, pmin, pmax, tick, mult) in MARKETS.items():
            cmds.append(
                CreateMarket(
                    sym, kind, 0, tick_size=tick, price_min=pmin, price_max=pmax, multiplier_minor=mult
                )
            )
        for acct in ACCOUNTS:
            cmds.append(Deposit(acct, self.cash_minor, 0))
        return cmds

    def command(self, op: Op) -> Command:
        self.ts_ms += 1
        ts = self.ts_ms
        if op.kind == "place":
            acct, sym, side, qty, price, typ, tif, post, stp, exp, coid = op.args
            if typ == "market":
                tif = "IOC" if tif in ("GTC", "GTD") else tif
                post = False
                price = None
            if tif in ("IOC", "FOK"):
                post = False
            oid = self.next_oid
            self.next_oid += 1
            if coid == "u":
                coid = f"u{oid}"  # unique; "x1"/"x2" are shared and so mostly duplicates
            self.placed.append((oid, acct))
            return PlaceOrder(
                oid,
                acct,
                sym,
                side,
                qty,
                ts,
                order_type=typ,
                price=price,
                time_in_force=tif,
                post_only=post,
                client_order_id=coid,
                expire_at_ms=ts + exp if tif == "GTD" else None,
                stp=stp,
            )
        if op.kind in ("cancel", "replace"):
            if self.placed:
                # Aim at recent orders: most older ones are long done.
                oid, owner = self.placed[-1 - op.args[0] % min(len(self.placed), 25)]
            else:
                oid, owner = 999_999, "a"
            if op.kind == "cancel":
                acct = owner if op.args[1] else ACCOUNTS[(ACCOUNTS.index(owner) + 1) % len(ACCOUNTS)]
                return CancelOrder(acct, oid, ts)
            _, qty, k, move = op.args
            return ReplaceOrder(owner, oid, qty, ts, price=k if move else None)
        if op.kind == "expire":
            return ExpireOrders(ts + op.args[0])
        if op.kind == "deposit":
            return Deposit(op.args[0], op.args[1], ts)
        if op.kind == "withdraw":
            return Withdraw(op.args[0], op.args[1], ts)
        if op.kind == "status":
            return SetMarketStatus(op.args[0], op.args[1], ts)
        if op.kind == "resolve":
            sym, hi = op.args
            kind, pmin, pmax, _, _ = MARKETS[sym]
            price = (100 if hi else 0) if kind == "binary" else (pmax if hi else pmin + 5 * 7)
            return ResolveMarket(sym, price, ts)
        raise AssertionError(op)


def fix_replace_price(ex: Exchange, cmd: Command) -> Command:
    """Replace ops carry a price *index*; map it onto the order's market grid."""
    if isinstance(cmd, ReplaceOrder) and cmd.price is not None:
        o = ex.orders.get(cmd.server_order_id)
        if o is None:
            return ReplaceOrder(cmd.account, cmd.server_order_id, cmd.quantity, cmd.ts_ms, price=None)
        return ReplaceOrder(
            cmd.account, cmd.server_order_id, cmd.quantity, cmd.ts_ms, _price(o.book.symbol, cmd.price)
        )
    return cmd


def check_invariants(ex: Exchange, net_deposits_minor: int) -> None:
    """Everything that must hold after any command."""
    total_minor = 0
    longs: dict[str, int] = {}
    shorts: dict[str, int] = {}
    expected_reserved: dict[str, int] = {a: 0 for a in ex.accounts}
    expected_locked: dict[tuple[str, str], int] = {}
    for o in ex.orders.values():
        m = ex.markets[o.book.symbol]
        assert o.remaining > 0 and 0 <= o.lock <= o.remaining
        if o.side == BUY:
            expected_reserved[o.account] += o.price * m.multiplier_minor * o.remaining
        else:
            expected_reserved[o.account] += (
                (m.settle_max - o.price) * m.multiplier_minor * (o.remaining - o.lock)
            )
            key = (o.account, m.symbol)
            expected_locked[key] = expected_locked.get(key, 0) + o.lock
    by_account: dict[str, list[int]] = {a: [] for a in ex.accounts}
    for oid, o in ex.orders.items():
        by_account[o.account].append(oid)
    for acct_id, a in ex.accounts.items():
        assert a.cash_minor >= 0, (acct_id, a.cash_minor)
        # The account's record list (dead records dropped lazily) lists exactly its resting orders.
        assert [o.oid for o in a.resting()] == sorted(by_account[acct_id])
        assert a.dead_orders == sum(1 for o in a.orders if not o.remaining)
        assert a.reserved_minor == expected_reserved[acct_id], (
            acct_id,
            a.reserved_minor,
            expected_reserved[acct_id],
        )
        total_minor += a.cash_minor + a.reserved_minor
        for sym, p in a.positions.items():
            assert p.long >= 0 and p.short >= 0 and 0 <= p.locked <= p.long
            assert p.locked == expected_locked.get((acct_id, sym), 0)
            # Free long units never sit beside short units (they are netted).
            assert p.long - p.locked == 0 or p.short == 0
            if not ex.markets[sym].allow_short:
                assert p.short == 0
            longs[sym] = longs.get(sym, 0) + p.long
            shorts[sym] = shorts.get(sym, 0) + p.short
    for sym, m in ex.markets.items():
        assert longs.get(sym, 0) == shorts.get(sym, 0), sym
        total_minor += m.settle_max_minor * longs.get(sym, 0)
        if m.status == "settled":
            assert longs.get(sym, 0) == 0
        bids, asks = ex.book_levels(sym, 10_000)
        if bids and asks:
            assert bids[0][0] < asks[0][0], ("crossed", sym, bids[0], asks[0])
        for side in (m.book.bids, m.book.asks):
            for level in side.levels.values():
                live = level.live()
                assert live and level.total == sum(o.remaining for o in live)
                assert all(ex.orders.get(o.oid) is o for o in live)
    assert total_minor == net_deposits_minor, (total_minor, net_deposits_minor)


def random_ops(rng: random.Random, n: int) -> list[Op]:
    """Long seeded streams (the hypothesis ones stay short to shrink well)."""
    ops: list[Op] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            typ = "market" if rng.random() < 0.15 else "limit"
            ops.append(
                Op(
                    "place",
                    (
                        rng.choice(ACCOUNTS),
                        rng.choice(sorted(MARKETS)),
                        rng.choice(("buy", "sell")),
                        rng.randint(1, 12),
                        0,
                        typ,
                        rng.choice(("GTC", "GTC", "IOC", "FOK", "GTD")),
                        rng.random() < 0.2,
                        rng.choice(("cancel_oldest", "cancel_newest", "cancel_both", "decrement")),
                        rng.randint(1, 40),
                        rng.choice((None, "u", "u", "u", f"y{rng.randint(0, 999)}")),
                    ),
                )
            )
            sym = ops[-1].args[1]
            args = list(ops[-1].args)
            args[4] = _price(sym, rng.randint(2, 8))
            ops[-1] = Op("place", tuple(args))
        elif r < 0.75:
            ops.append(Op("cancel", (rng.randint(0, 10**6), rng.random() < 0.9)))
        elif r < 0.85:
            ops.append(
                Op(
                    "replace",
                    (rng.randint(0, 10**6), rng.randint(1, 12), rng.randint(2, 8), rng.random() < 0.5),
                )
            )
        elif r < 0.9:
            ops.append(Op("expire", (rng.randint(0, 30),)))
        elif r < 0.95:
            ops.append(Op(rng.choice(("deposit", "withdraw")), (rng.choice(ACCOUNTS), rng.randint(1, 3000))))
        elif r < 0.999:
            ops.append(
                Op("status", (rng.choice(sorted(MARKETS)), rng.choice(("open", "open", "open", "halted"))))
            )
        else:
            ops.append(Op("resolve", (rng.choice(sorted(MARKETS)), rng.random() < 0.5)))
    return ops
