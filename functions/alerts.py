"""Price-threshold alerts: decide which fire on a trade, mark each fired once, deliver it.

The problem: a user asks "tell me when SYMBOL trades at or above 60". Trades arrive in the read
model (`rm_trades`, written by the projector); an evaluator may run twice over the same trades
(a retry, a restart, the projector calling in while `run-once` also runs), and a delivery call
to the orderbook host may fail. The user must get the notice, and an alert must fire only once.

How:
- `triggered(alerts, trade_price_ticks)` is the pure rule: `above` fires when a trade's price is
  >= the threshold, `below` when it is <= the threshold. No clock, no I/O.
- `evaluate(conn, trades)` loads the active alerts of the trades' symbols, applies the rule per
  trade in order (only to alerts created at or before the trade), and marks the winners with a
  conditional `UPDATE ... WHERE triggered_at IS NULL RETURNING`: the database, not this code,
  decides who fires, so two evaluators racing fire each alert exactly once.
- `deliver_pending(pool, notifier)` is an outbox: every triggered, undelivered alert is sent on
  the user's private channel `agent:{user_id}` through the host's `POST /notify`, then marked
  delivered. A crash between the two sends it again (at least once); the payload carries the
  alert id so clients drop a repeat.
- `run_once(pool, notifier)` reads trades after its cursor (table `alert_cursor`), evaluates them
  and advances the cursor in one transaction, then delivers. `python -m functions.alerts
  run-once` runs it from the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from emlib.db import Conn

Direction = Literal["above", "below"]
DIRECTIONS: tuple[Direction, ...] = ("above", "below")
MAX_ACTIVE_ALERTS_PER_USER = 50
TRADE_BATCH_MAX = 1000
DELIVERY_BATCH_MAX = 200
# After this many failed attempts an alert stays undelivered (visible in GET /api/v1/alerts)
# instead of being retried forever; matches the partial index in migration 0009.
DELIVERY_ATTEMPTS_MAX = 10
CURSOR_NAME = "alerts"

_log = logging.getLogger("functions.alerts")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """What the pure rule needs of an alert."""

    id: str
    direction: Direction
    price_ticks: int


def fires(alert: AlertRule, trade_price_ticks: int) -> bool:
    if alert.direction == "above":
        return trade_price_ticks >= alert.price_ticks
    return trade_price_ticks <= alert.price_ticks


def triggered(alerts: Iterable[AlertRule], trade_price_ticks: int) -> list[AlertRule]:
    """The alerts a trade at `trade_price_ticks` sets off, in the order given."""
    return [alert for alert in alerts if fires(alert, trade_price_ticks)]


# --- the read model side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade as the evaluator sees it (a row of rm_trades); trade ids rise in log order."""

    trade_id: int
    symbol: str
    price_ticks: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class FiredAlert:
    id: str
    user_id: str
    symbol: str
    direction: Direction
    price_ticks: int
    trigger_price_ticks: int
    trigger_trade_id: int
    triggered_at: datetime

    def payload(self) -> dict[str, Any]:
        """The notice on `agent:{user_id}` (the host wraps it in the realtime envelope)."""
        return {
            "type": "alert",
            "alert_id": self.id,
            "symbol": self.symbol,
            "direction": self.direction,
            "price": self.price_ticks,
            "trade_price": self.trigger_price_ticks,
            "trade_id": self.trigger_trade_id,
            "triggered_at": _rfc3339(self.triggered_at),
        }


class Notifier(Protocol):
    """Delivers a payload on `agent:{account}`; `OrderbookClient.notify` is the real one."""

    def notify(self, account: str, message: dict[str, Any], /) -> Any: ...


@dataclass
class _Active:
    rule: AlertRule
    user_id: str
    symbol: str
    created_ms: int


_FIRE_SQL = """
UPDATE price_alerts
   SET triggered_at = %(at)s, trigger_price_ticks = %(price)s, trigger_trade_id = %(trade_id)s
 WHERE id = ANY(%(ids)s) AND triggered_at IS NULL
RETURNING id, user_id, symbol, direction, price_ticks, trigger_price_ticks, trigger_trade_id, triggered_at
"""


def evaluate(conn: Conn, trades: Sequence[Trade]) -> list[FiredAlert]:
    """Fire the alerts these trades set off (each alert once, ever); return those fired now.

    Runs in the caller's transaction, so a projector can call it beside its own writes.
    """
    if not trades:
        return []
    symbols = sorted({t.symbol for t in trades})
    rows = conn.execute(
        "SELECT id, user_id, symbol, direction, price_ticks,"
        " (extract(epoch FROM created_at) * 1000)::bigint FROM price_alerts"
        " WHERE symbol = ANY(%s) AND triggered_at IS NULL ORDER BY created_at, id",
        (symbols,),
    ).fetchall()
    active: dict[str, list[_Active]] = {}
    for alert_id, user_id, symbol, direction, price_ticks, created_ms in rows:
        rule = AlertRule(alert_id, direction, price_ticks)
        active.setdefault(symbol, []).append(_Active(rule, user_id, symbol, created_ms))
    fired: list[FiredAlert] = []
    for trade in sorted(trades, key=lambda t: t.trade_id):
        # A trade before the alert existed does not set it off (the host's clock stamps trades).
        candidates = [a for a in active.get(trade.symbol, []) if a.created_ms <= trade.ts_ms]
        hits = triggered((a.rule for a in candidates), trade.price_ticks)
        if not hits:
            continue
        hit_ids = {h.id for h in hits}
        active[trade.symbol] = [a for a in active[trade.symbol] if a.rule.id not in hit_ids]
        returned = conn.execute(
            _FIRE_SQL,
            {
                "at": _from_ms(trade.ts_ms),
                "price": trade.price_ticks,
                "trade_id": trade.trade_id,
                "ids": sorted(hit_ids),
            },
        ).fetchall()
        fired.extend(_fired(row) for row in returned)
    return fired


def _fired(row: Sequence[Any]) -> FiredAlert:
    return FiredAlert(
        id=row[0],
        user_id=row[1],
        symbol=row[2],
        direction=row[3],
        price_ticks=row[4],
        trigger_price_ticks=row[5],
        trigger_trade_id=row[6],
        triggered_at=row[7],
    )


def _from_ms(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms // 1000, UTC) + timedelta(milliseconds=ts_ms % 1000)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the cursor loop and the outbox --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunResult:
    trades: int
    fired: int
    delivered: int
    failed: int
    last_trade_id: int

    def as_dict(self) -> dict[str, int]:
        return {
            "trades": self.trades,
            "fired": self.fired,
            "delivered": self.delivered,
            "failed": self.failed,
            "last_trade_id": self.last_trade_id,
        }


def evaluate_new_trades(
    pool: ConnectionPool[Conn], *, batch_max: int = TRADE_BATCH_MAX, cursor_name: str = CURSOR_NAME
) -> tuple[int, int, int]:
    """Evaluate one batch of rm_trades after the cursor; (trades, fired, last_trade_id).

    The cursor row is locked for the transaction, so two runners take turns instead of
    evaluating the same batch at once (which would still fire each alert once, just twice
    the work), and it moves forward in the same commit as the alerts fired.
    """
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO alert_cursor (name, last_trade_id) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING",
            (cursor_name,),
        )
        row = conn.execute(
            "SELECT last_trade_id FROM alert_cursor WHERE name = %s FOR UPDATE", (cursor_name,)
        ).fetchone()
        assert row is not None
        last_trade_id: int = row[0]
        trades = [
            Trade(trade_id, symbol, price, ts_ms)
            for trade_id, symbol, price, ts_ms in conn.execute(
                "SELECT trade_id, symbol, price, ts_ms FROM rm_trades WHERE trade_id > %s"
                " ORDER BY trade_id LIMIT %s",
                (last_trade_id, batch_max),
            ).fetchall()
        ]
        if not trades:
            return 0, 0, last_trade_id
        fired = evaluate(conn, trades)
        last_trade_id = trades[-1].trade_id
        conn.execute(
            "UPDATE alert_cursor SET last_trade_id = %s, updated_at = now() WHERE name = %s",
            (last_trade_id, cursor_name),
        )
        return len(trades), len(fired), last_trade_id


def deliver_pending(
    pool: ConnectionPool[Conn], notifier: Notifier, *, batch_max: int = DELIVERY_BATCH_MAX
) -> tuple[int, int]:
    """Send every triggered, undelivered alert; (delivered, failed). Failures stay pending.

    `FOR UPDATE SKIP LOCKED` keeps two deliverers off the same alert; the notice goes out
    before `delivered_at` is written, so a crash in between repeats it (at least once).
    """
    delivered = failed = 0
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "SELECT id, user_id, symbol, direction, price_ticks, trigger_price_ticks, trigger_trade_id,"
            " triggered_at FROM price_alerts WHERE triggered_at IS NOT NULL AND delivered_at IS NULL"
            " AND delivery_attempts < %s ORDER BY triggered_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
            (DELIVERY_ATTEMPTS_MAX, batch_max),
        ).fetchall()
        for row in rows:
            alert = _fired(row)
            try:
                notifier.notify(alert.user_id, alert.payload())
            except Exception as exc:
                # Any failure leaves it pending for the next run, up to the attempt limit.
                _log.warning("alert %s: delivery to %s failed", alert.id, alert.user_id, exc_info=True)
                conn.execute(
                    "UPDATE price_alerts SET delivery_attempts = delivery_attempts + 1,"
                    " last_delivery_error = %s WHERE id = %s",
                    (f"{type(exc).__name__}: {exc}"[:1000], alert.id),
                )
                failed += 1
                continue
            conn.execute("UPDATE price_alerts SET delivered_at = now() WHERE id = %s", (alert.id,))
            delivered += 1
    return delivered, failed


def run_once(
    pool: ConnectionPool[Conn], notifier: Notifier, *, batch_max: int = TRADE_BATCH_MAX
) -> RunResult:
    """Evaluate every trade after the cursor (in batches), then deliver what fired."""
    trades = fired = 0
    while True:
        count, fired_now, last_trade_id = evaluate_new_trades(pool, batch_max=batch_max)
        trades += count
        fired += fired_now
        if count < batch_max:
            break
    delivered, failed = deliver_pending(pool, notifier)
    return RunResult(trades, fired, delivered, failed, last_trade_id)


def main(argv: Sequence[str] | None = None) -> int:
    from emlib.resources import Resources
    from emlib.settings import get_settings
    from functions.orderbook_client import OrderbookClient

    parser = argparse.ArgumentParser(prog="python -m functions.alerts", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run-once", help="evaluate trades since the cursor and deliver fired alerts")
    parser.parse_args(argv)
    settings = get_settings()
    resources = Resources(settings)
    client = OrderbookClient(settings)
    try:
        result = run_once(resources.pool, client)
    finally:
        client.close()
        resources.close()
    print(json.dumps(result.as_dict()))
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
