"""A naive reference order book: plain lists, a full sort on every match, no ledger.

It exists to be obviously correct, so the fast engine can be compared with it on random
command streams. It models matching only (price-time priority, market/IOC/FOK/GTD,
post-only, self-trade modes, cancel, replace, expiry); the property tests give accounts
enough cash that risk checks never refuse, so both sides see the same accepted orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RefOrder:
    oid: int
    account: str
    symbol: str
    side: str
    price: int
    remaining: int
    seq: int
    expire_at_ms: int
    post_only: bool
    filled: int = 0


@dataclass
class RefResult:
    code: str | None = None
    status: str | None = None
    filled: int = 0
    trades: list[tuple[str, int, int, int, int]] = field(
        default_factory=list
    )  # sym, price, qty, maker, taker
    cancels: list[tuple[int, str, int]] = field(default_factory=list)  # oid, reason, qty


class ReferenceBook:
    def __init__(self, bounds: dict[str, tuple[int, int]]) -> None:
        self.orders: list[RefOrder] = []  # resting orders, all symbols
        self.seq = 0
        self.bounds = bounds  # symbol -> (price_min, price_max)

    def _crosses(self, side: str, limit: int, resting: RefOrder) -> bool:
        return resting.price <= limit if side == "buy" else resting.price >= limit

    def _queue(self, symbol: str, side: str, limit: int) -> list[RefOrder]:
        """Opposite resting orders a taker may hit, in the order it would hit them."""
        opp = "sell" if side == "buy" else "buy"
        cands = [
            o for o in self.orders if o.symbol == symbol and o.side == opp and self._crosses(side, limit, o)
        ]
        if side == "buy":
            cands.sort(key=lambda o: (o.price, o.seq))
        else:
            cands.sort(key=lambda o: (-o.price, o.seq))
        return cands

    def _rest(self, o: RefOrder) -> None:
        self.seq += 1
        o.seq = self.seq
        self.orders.append(o)

    def _match(self, taker: RefOrder, stp: str, res: RefResult) -> bool:
        for maker in self._queue(taker.symbol, taker.side, taker.price):
            if not taker.remaining:
                break
            if maker.account == taker.account:
                if stp == "cancel_oldest":
                    self.orders.remove(maker)
                    res.cancels.append((maker.oid, "stp", maker.remaining))
                    continue
                if stp == "decrement":
                    d = min(maker.remaining, taker.remaining)
                    maker.remaining -= d
                    taker.remaining -= d
                    res.cancels.append((maker.oid, "stp", d))
                    if not maker.remaining:
                        self.orders.remove(maker)
                    res.cancels.append((taker.oid, "stp", d))
                    continue
                if stp == "cancel_both":
                    self.orders.remove(maker)
                    res.cancels.append((maker.oid, "stp", maker.remaining))
                return True
            f = min(maker.remaining, taker.remaining)
            maker.remaining -= f
            maker.filled += f
            taker.remaining -= f
            taker.filled += f
            res.trades.append((taker.symbol, maker.price, f, maker.oid, taker.oid))
            if not maker.remaining:
                self.orders.remove(maker)
        return False

    def place(
        self,
        oid: int,
        account: str,
        symbol: str,
        side: str,
        quantity: int,
        order_type: str,
        price: int | None,
        tif: str,
        post_only: bool,
        expire_at_ms: int | None,
        stp: str,
    ) -> RefResult:
        res = RefResult()
        if order_type == "market":
            if price is None:
                price_min, price_max = self.bounds[symbol]
                price = price_max if side == "buy" else price_min
            if tif == "GTC":
                tif = "IOC"
        assert price is not None
        if post_only and self._queue(symbol, side, price):
            res.code = "post_only_would_cross"
            res.status = "rejected"
            return res
        if tif == "FOK":
            avail = 0
            for o in self._queue(symbol, side, price):
                if o.account == account:
                    if stp != "cancel_oldest":
                        break
                    continue
                avail += o.remaining
            if avail < quantity:
                res.code = "fok_not_fillable"
                res.status = "rejected"
                return res
        o = RefOrder(oid, account, symbol, side, price, quantity, 0, expire_at_ms or 0, post_only)
        stopped = self._match(o, stp, res)
        if o.remaining:
            if stopped or tif in ("IOC", "FOK"):
                res.cancels.append((oid, "stp" if stopped else "ioc_remainder", o.remaining))
                res.status = "cancelled"
            else:
                self._rest(o)
                res.status = "partially_filled" if o.filled else "open"
        else:
            res.status = "filled" if o.filled == quantity else "cancelled"
        res.filled = o.filled
        return res

    def _find(self, oid: int) -> RefOrder | None:
        for o in self.orders:
            if o.oid == oid:
                return o
        return None

    def cancel(self, account: str, oid: int) -> RefResult:
        res = RefResult()
        o = self._find(oid)
        if o is None:
            res.code = "order_not_open"
        elif o.account != account:
            res.code = "not_owner"
        else:
            self.orders.remove(o)
            res.cancels.append((oid, "user", o.remaining))
        return res

    def replace(self, account: str, oid: int, quantity: int, price: int | None) -> RefResult:
        res = RefResult()
        o = self._find(oid)
        if o is None:
            res.code = "order_not_open"
            return res
        if o.account != account:
            res.code = "not_owner"
            return res
        new_price = o.price if price is None else price
        if new_price == o.price and quantity <= o.remaining:
            o.remaining = quantity
            return res
        if o.post_only and self._queue(o.symbol, o.side, new_price):
            res.code = "post_only_would_cross"
            return res
        self.orders.remove(o)
        o.price = new_price
        o.remaining = quantity
        self._match(o, "cancel_oldest", res)
        if o.remaining:
            self._rest(o)
        return res

    def expire(self, now_ms: int) -> RefResult:
        res = RefResult()
        due = sorted(
            (o for o in self.orders if o.expire_at_ms and o.expire_at_ms <= now_ms),
            key=lambda o: (o.expire_at_ms, o.oid),
        )
        for o in due:
            self.orders.remove(o)
            res.cancels.append((o.oid, "expired", o.remaining))
        return res

    def levels(self, symbol: str, side: str) -> list[list[int]]:
        totals: dict[int, int] = {}
        for o in self.orders:
            if o.symbol == symbol and o.side == side:
                totals[o.price] = totals.get(o.price, 0) + o.remaining
        prices = sorted(totals, reverse=side == "buy")
        return [[p, totals[p]] for p in prices]
