"""The projector: the orderbook host's event stream, applied to the rm_* tables in PostgreSQL.

Problem: the host is the source of truth for books, orders, balances and positions, but the
API needs history and aggregates (trades, fills, candles, leaderboards) the host does not keep,
and it must survive a crash of either side without double counting. The host offers every
durable command's events in WAL order (`GET /events?after=<wal_seq>`); the projector pulls
pages and, for each page, applies the records it has not applied yet AND advances its cursor
(`rm_cursor.last_wal_seq`) in ONE transaction. So:

- idempotent by sequence number: records at or below the cursor are skipped, whoever sent them;
- resumable: after a restart (or a SIGKILL mid-page) it reads the cursor and asks for what
  follows; a page that was half-applied was rolled back with its cursor, and comes again;
- rebuildable: `rebuild` truncates the rm_* tables, resets the cursor and replays from 0 (the
  host re-derives old events from its log; 410 `sequence_too_old` if the log was pruned).

The cursor row is locked (`FOR UPDATE`) and re-read inside each page's transaction, never
cached, so two projectors (a running service and a `rebuild`) serialise instead of interleaving:
if the stored cursor moved below the page's start (a rebuild reset it), the page is dropped and
the next fetch starts from the stored cursor.

Run: `python -m functions.projector [run|once|rebuild] [--limit N] [--health-port P]`.
`run` polls forever (the devstack child); `once` catches up to the host's head and exits;
`rebuild` is truncate + once. `docs/specs/read_model.md` has the tables and definitions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

import httpx
import psycopg

from emlib.settings import HmacKey, Settings, get_settings
from emlib.signing_http import HmacAuth
from functions import read_model as rm

_log = logging.getLogger("projector")

DEFAULT_NAME: Final = "main"
DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 10_000  # the host's own cap on /events
POLL_INTERVAL_S: Final = 0.2
RETRY_MAX_S: Final = 5.0
DEFAULT_HEALTH_PORT: Final = 8103

# Every table `rebuild` empties (rm_cursor is reset, not emptied).
RM_TABLES: Final = (
    "rm_markets",
    "rm_orders",
    "rm_trades",
    "rm_fills",
    "rm_positions",
    "rm_balances",
    "rm_candles",
    "rm_networth_daily",
    "rm_networth_day",
)


class ProjectorError(RuntimeError):
    """Base of the projector's errors."""


class EventsTooOldError(ProjectorError):
    """410 `sequence_too_old`: the host's log no longer reaches back to the cursor."""


class SourceUnavailableError(ProjectorError):
    """The host did not answer, or answered 5xx: retry later."""


class EventSource(Protocol):
    """Where pages of records come from (the host over HTTP; a list in unit tests)."""

    def fetch(self, after: int, limit: int) -> dict[str, Any]: ...


class HostEventSource:
    """`GET /events` on the orderbook host, HMAC-signed like every service-to-service call."""

    def __init__(self, base_url: str, key: HmacKey, timeout_s: float = 30.0) -> None:
        # Generous timeout: a page older than the host's memory journal is re-derived by
        # replaying its log, which takes a while on a long log.
        self._client = httpx.Client(base_url=base_url, auth=HmacAuth(key.id, key.secret), timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> HostEventSource:
        return cls(settings.orderbook_url, settings.hmac_keys[-1])

    def close(self) -> None:
        self._client.close()

    def fetch(self, after: int, limit: int) -> dict[str, Any]:
        try:
            response = self._client.get("/events", params={"after": after, "limit": limit})
        except httpx.HTTPError as exc:
            raise SourceUnavailableError(f"orderbook host unreachable: {exc!r}") from exc
        if response.status_code == 410:
            raise EventsTooOldError(response.text)
        if response.status_code >= 500 or response.status_code in (429, 503):
            raise SourceUnavailableError(
                f"orderbook host answered {response.status_code}: {response.text[:200]}"
            )
        if response.status_code != 200:
            # 4xx other than the above is a bug or a misconfiguration (wrong key): fail loudly.
            raise ProjectorError(
                f"orderbook host refused /events: {response.status_code} {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body


@dataclass(frozen=True)
class PageResult:
    applied: int  # records applied by this call
    last_wal_seq: int  # the cursor after the call
    head_wal_seq: int  # the host's newest applied command when it answered


class Projector:
    """Applies pages of host records to one database under one cursor name."""

    def __init__(self, conn: psycopg.Connection[Any], source: EventSource, name: str = DEFAULT_NAME) -> None:
        assert conn.autocommit, "the projector manages its own transactions"
        self.conn = conn
        self.source = source
        self.name = name
        self._markets_sync: bool | None = None
        self._day: dt.date | None = None  # rm_networth_day, read at the start of each page
        self.head_wal_seq = 0

    # ------------------------------------------------------------------ cursor

    def cursor(self) -> int:
        row = self.conn.execute(
            "SELECT last_wal_seq FROM rm_cursor WHERE projector = %s", (self.name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _lock_cursor(self) -> int:
        self.conn.execute(
            "INSERT INTO rm_cursor (projector, last_wal_seq) VALUES (%s, 0) ON CONFLICT DO NOTHING",
            (self.name,),
        )
        row = self.conn.execute(
            "SELECT last_wal_seq FROM rm_cursor WHERE projector = %s FOR UPDATE", (self.name,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    # ------------------------------------------------------------------ driving

    def step(self, limit: int = DEFAULT_LIMIT) -> PageResult:
        """Fetch one page after the stored cursor and apply it."""
        after = self.cursor()
        page = self.source.fetch(after, limit)
        self.head_wal_seq = int(page.get("head_wal_seq", 0))
        applied, last = self.apply_page(page["records"], page_after=after)
        return PageResult(applied, last, self.head_wal_seq)

    def catch_up(self, limit: int = DEFAULT_LIMIT, stop: threading.Event | None = None) -> int:
        """Apply pages until the host has nothing newer; return the records applied."""
        total = 0
        while stop is None or not stop.is_set():
            result = self.step(limit)
            total += result.applied
            if result.applied == 0 and result.last_wal_seq >= result.head_wal_seq:
                break
        return total

    def apply_page(self, records: Sequence[dict[str, Any]], page_after: int | None = None) -> tuple[int, int]:
        """Apply the records above the cursor, and move the cursor, in one transaction.

        `page_after` is the cursor the page was fetched from; when the stored cursor is now
        lower (a rebuild reset it meanwhile) the page is dropped, since applying it would skip
        the records in between. Returns (records applied, cursor after).
        """
        with self.conn.transaction():
            cursor = self._lock_cursor()
            if page_after is not None and cursor < page_after:
                return 0, cursor
            applied = 0
            touched: set[str] = set()
            row = self.conn.execute(
                "SELECT day FROM rm_networth_day WHERE projector = %s", (self.name,)
            ).fetchone()
            self._day = row[0] if row else None
            for record in records:
                seq = int(record["wal_seq"])
                if seq <= cursor:
                    continue
                self._apply_record(seq, int(record["ts_ms"]), record["events"], touched)
                cursor = seq
                applied += 1
            if applied:
                self.conn.execute(
                    "UPDATE rm_cursor SET last_wal_seq = %s, updated_at = now() WHERE projector = %s",
                    (cursor, self.name),
                )
                if touched:
                    self._sync_markets(sorted(touched))
        return applied, cursor

    def rebuild(self, limit: int = DEFAULT_LIMIT) -> int:
        """Empty the read model and replay the host's whole log into it."""
        with self.conn.transaction():
            self._lock_cursor()
            self.conn.execute(f"TRUNCATE {', '.join(RM_TABLES)}")
            self.conn.execute(
                "UPDATE rm_cursor SET last_wal_seq = 0, updated_at = now() WHERE projector = %s", (self.name,)
            )
        return self.catch_up(limit)

    # ------------------------------------------------------------------ one record

    def _apply_record(self, seq: int, ts_ms: int, events: list[dict[str, Any]], touched: set[str]) -> None:
        self._roll_day(ts_ms)
        # A command whose only events are balances is a deposit or a withdrawal: money that
        # entered or left from outside, which the daily leaderboard must not count as a gain.
        if events and all(e["type"] == "balance" for e in events):
            self._record_flows(ts_ms, events)
        for event in events:
            kind = event["type"]
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, seq, ts_ms, event)
            if kind == "trade":
                touched.add(event["symbol"])

    def _roll_day(self, ts_ms: int) -> None:
        """On the first record of a new UTC day, store every account's net worth as that day's
        baseline (the worth at the end of the previous day, at the prices then)."""
        day = rm.utc_day(ts_ms)
        if self._day is not None and self._day >= day:
            return
        self._day = day
        self.conn.execute(
            "INSERT INTO rm_networth_daily (day, account, baseline_minor) "
            f"SELECT %s, account, net_worth_minor FROM ({NET_WORTH_SQL}) nw ON CONFLICT DO NOTHING",
            (day,),
        )
        self.conn.execute(
            "INSERT INTO rm_networth_day (projector, day) VALUES (%s, %s) "
            "ON CONFLICT (projector) DO UPDATE SET day = excluded.day",
            (self.name, day),
        )

    def _record_flows(self, ts_ms: int, events: list[dict[str, Any]]) -> None:
        day = rm.utc_day(ts_ms)
        for event in events:
            row = self.conn.execute(
                "SELECT cash_minor + reserved_minor FROM rm_balances WHERE account = %s", (event["account"],)
            ).fetchone()
            before = int(row[0]) if row else 0
            delta = int(event["cash_minor"]) + int(event["reserved_minor"]) - before
            self.conn.execute(
                _SQL_FLOW,
                (day, event["account"], delta),
            )

    def _on_market_created(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        self.conn.execute(
            _SQL_MARKET,
            (
                e["symbol"],
                e["kind"],
                e["tick_size"],
                e["price_min"],
                e["price_max"],
                e["settle_max"],
                e["multiplier_minor"],
                e["status"],
                seq,
            ),
        )

    def _on_market_status(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        self.conn.execute("UPDATE rm_markets SET status = %s WHERE symbol = %s", (e["status"], e["symbol"]))

    def _on_market_settled(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE rm_markets SET settlement_price = %s WHERE symbol = %s",
            (e["settlement_price"], e["symbol"]),
        )

    def _on_order_accepted(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        self.conn.execute(
            _SQL_ORDER,
            (
                e["server_order_id"],
                e["account"],
                e["symbol"],
                e["side"],
                e["order_type"],
                e["time_in_force"],
                e["price"],
                e["quantity"],
                e["quantity"],
                e["client_order_id"],
                e["ts_ms"],
                e["ts_ms"],
                seq,
                seq,
            ),
        )

    def _on_trade(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        symbol, price, qty, trade_ts = e["symbol"], int(e["price"]), int(e["quantity"]), int(e["ts_ms"])
        maker_side = "sell" if e["taker_side"] == "buy" else "buy"
        self.conn.execute(
            _SQL_TRADE,
            (
                e["trade_id"],
                symbol,
                price,
                qty,
                e["taker_side"],
                e["maker_order_id"],
                e["taker_order_id"],
                e["maker_account"],
                e["taker_account"],
                trade_ts,
                seq,
            ),
        )
        for liquidity, account, order_id, side, remaining in (
            ("maker", e["maker_account"], e["maker_order_id"], maker_side, e["maker_remaining_quantity"]),
            (
                "taker",
                e["taker_account"],
                e["taker_order_id"],
                e["taker_side"],
                e["taker_remaining_quantity"],
            ),
        ):
            self.conn.execute(
                _SQL_FILL,
                (e["trade_id"], liquidity, account, order_id, symbol, side, price, qty, trade_ts),
            )
            self.conn.execute(
                "UPDATE rm_orders SET filled = filled + %s, remaining = %s, status = %s, updated_ts_ms = %s,"
                " updated_wal_seq = %s WHERE server_order_id = %s",
                (qty, remaining, rm.status_after_fill(int(remaining)), trade_ts, seq, order_id),
            )
        for interval in rm.INTERVALS:
            self.conn.execute(
                _SQL_CANDLE,
                (symbol, interval, rm.bucket_start_ms(trade_ts, interval), price, price, price, price, qty),
            )
        self.conn.execute(
            "UPDATE rm_markets SET last_price = %s, last_trade_id = %s, last_trade_ts_ms = %s,"
            " volume = volume + %s, trade_count = trade_count + 1 WHERE symbol = %s",
            (price, e["trade_id"], trade_ts, qty, symbol),
        )

    def _on_order_cancelled(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        remaining, filled = int(e["remaining_quantity"]), int(e["filled_quantity"])
        self.conn.execute(
            _SQL_CANCEL,
            (
                remaining,
                filled,
                filled + remaining,
                rm.status_after_cancel(remaining, filled),
                ts_ms,
                seq,
                e["server_order_id"],
            ),
        )

    def _on_order_replaced(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        # `quantity` is the new open quantity; what was filled before stays filled.
        self.conn.execute(
            "UPDATE rm_orders SET price = %s, remaining = %s, quantity = filled + %s, updated_ts_ms = %s,"
            " updated_wal_seq = %s WHERE server_order_id = %s",
            (e["price"], e["quantity"], e["quantity"], ts_ms, seq, e["server_order_id"]),
        )

    def _on_balance(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        self.conn.execute(
            _SQL_BALANCE,
            (e["account"], e["cash_minor"], e["reserved_minor"], seq),
        )

    def _on_position(self, seq: int, ts_ms: int, e: dict[str, Any]) -> None:
        if e["long_quantity"] == 0 and e["short_quantity"] == 0 and e["locked_quantity"] == 0:
            self.conn.execute(
                "DELETE FROM rm_positions WHERE account = %s AND symbol = %s", (e["account"], e["symbol"])
            )
            return
        self.conn.execute(
            _SQL_POSITION,
            (
                e["account"],
                e["symbol"],
                e["position"],
                e["long_quantity"],
                e["short_quantity"],
                e["locked_quantity"],
                seq,
            ),
        )

    def _sync_markets(self, symbols: list[str]) -> None:
        """Copy volume and last trade time into the catalogue's `markets` table, when there is one
        with those columns (it belongs to another migration; checked, not assumed)."""
        if self._markets_sync is None:
            row = self.conn.execute(_SQL_HAS_MARKETS).fetchone()
            self._markets_sync = bool(row and row[0])
        if not self._markets_sync:
            return
        self.conn.execute(
            "UPDATE markets m SET volume = r.volume,"
            " last_trade_at = to_timestamp(r.last_trade_ts_ms / 1000.0)"
            " FROM rm_markets r WHERE r.symbol = m.symbol AND r.symbol = ANY(%s)",
            (symbols,),
        )


_SQL_FLOW: Final = """
INSERT INTO rm_networth_daily (day, account, baseline_minor, flows_minor) VALUES (%s, %s, 0, %s)
ON CONFLICT (day, account) DO UPDATE SET flows_minor = rm_networth_daily.flows_minor + excluded.flows_minor
"""

_SQL_MARKET: Final = """
INSERT INTO rm_markets (symbol, kind, tick_size, price_min, price_max, settle_max, multiplier_minor,
    status, created_wal_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (symbol) DO NOTHING
"""

_SQL_ORDER: Final = """
INSERT INTO rm_orders (server_order_id, account, symbol, side, type, time_in_force, price, quantity,
    filled, remaining, status, client_order_id, created_ts_ms, updated_ts_ms, created_wal_seq,
    updated_wal_seq)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, 'open', %s, %s, %s, %s, %s)
ON CONFLICT (server_order_id) DO NOTHING
"""

_SQL_TRADE: Final = """
INSERT INTO rm_trades (trade_id, symbol, price, quantity, taker_side, maker_order_id, taker_order_id,
    maker_account, taker_account, ts_ms, wal_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

_SQL_FILL: Final = """
INSERT INTO rm_fills (trade_id, liquidity, account, server_order_id, symbol, side, price, quantity, ts_ms)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

_SQL_CANDLE: Final = """
INSERT INTO rm_candles AS c (symbol, interval, bucket_start_ms, open, high, low, close, volume, trade_count)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1)
ON CONFLICT (symbol, interval, bucket_start_ms) DO UPDATE SET
    high = greatest(c.high, excluded.high), low = least(c.low, excluded.low), close = excluded.close,
    volume = c.volume + excluded.volume, trade_count = c.trade_count + 1
"""

_SQL_CANCEL: Final = """
UPDATE rm_orders SET remaining = %s, filled = %s, quantity = %s, status = %s, updated_ts_ms = %s,
    updated_wal_seq = %s
WHERE server_order_id = %s
"""

_SQL_BALANCE: Final = """
INSERT INTO rm_balances (account, cash_minor, reserved_minor, updated_wal_seq) VALUES (%s, %s, %s, %s)
ON CONFLICT (account) DO UPDATE SET cash_minor = excluded.cash_minor,
    reserved_minor = excluded.reserved_minor, updated_wal_seq = excluded.updated_wal_seq
"""

_SQL_POSITION: Final = """
INSERT INTO rm_positions (account, symbol, position, long_quantity, short_quantity, locked_quantity,
    updated_wal_seq) VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (account, symbol) DO UPDATE SET position = excluded.position,
    long_quantity = excluded.long_quantity, short_quantity = excluded.short_quantity,
    locked_quantity = excluded.locked_quantity, updated_wal_seq = excluded.updated_wal_seq
"""

_SQL_HAS_MARKETS: Final = """
SELECT to_regclass('markets') IS NOT NULL AND (
    SELECT count(*) FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'markets'
      AND column_name IN ('volume', 'last_trade_at')) = 2
"""

_Handler = Callable[[Projector, int, int, dict[str, Any]], None]
# book events are not projected: depth is read live from the host (snapshot); order_rejected
# and order_duplicate made no order.
_HANDLERS: Final[dict[str, _Handler]] = {
    "market_created": Projector._on_market_created,
    "market_status": Projector._on_market_status,
    "market_settled": Projector._on_market_settled,
    "order_accepted": Projector._on_order_accepted,
    "trade": Projector._on_trade,
    "order_cancelled": Projector._on_order_cancelled,
    "order_replaced": Projector._on_order_replaced,
    "balance": Projector._on_balance,
    "position": Projector._on_position,
}

# Net worth per account: cash + reserved + positions marked to market (see
# read_model.position_value_minor for why a short unit is worth settle_max - price).
NET_WORTH_SQL: Final = """
SELECT b.account,
       b.cash_minor + b.reserved_minor + COALESCE(SUM(
           CASE WHEN COALESCE(m.settlement_price, m.last_price) IS NULL THEN 0
           ELSE m.multiplier_minor * (
               p.long_quantity * COALESCE(m.settlement_price, m.last_price)
               + p.short_quantity * (m.settle_max - COALESCE(m.settlement_price, m.last_price)))
           END), 0)::bigint AS net_worth_minor
FROM rm_balances b
LEFT JOIN rm_positions p ON p.account = b.account
LEFT JOIN rm_markets m ON m.symbol = p.symbol
GROUP BY b.account, b.cash_minor, b.reserved_minor
"""


# ---------------------------------------------------------------------- process


class _Health:
    """A tiny /health and /ready endpoint so a supervisor can wait for the projector."""

    def __init__(self, port: int) -> None:
        self.ready = False
        self.status: dict[str, int] = {}
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/health":
                    code, body = 200, {"status": "ok"}
                elif self.path == "/ready":
                    code = 200 if health.ready else 503
                    body = {"ready": health.ready, **health.status}
                else:
                    code, body = 404, {"code": "not_found"}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_forever(
    projector: Projector,
    stop: threading.Event,
    *,
    limit: int = DEFAULT_LIMIT,
    poll_interval_s: float = POLL_INTERVAL_S,
    health: _Health | None = None,
) -> None:
    """Poll the host until `stop` is set; back off on errors (the host restarting is normal)."""
    backoff_s = poll_interval_s
    while not stop.is_set():
        try:
            result = projector.step(limit)
        except EventsTooOldError as exc:
            _log.error("the host's log no longer reaches the cursor; rebuild needed: %s", exc)
            stop.wait(RETRY_MAX_S)
            continue
        except (SourceUnavailableError, psycopg.OperationalError) as exc:
            _log.warning("projector paused: %s", exc)
            stop.wait(backoff_s)
            backoff_s = min(backoff_s * 2, RETRY_MAX_S)
            continue
        backoff_s = poll_interval_s
        if health is not None:
            health.ready = True
            health.status = {"last_wal_seq": result.last_wal_seq, "head_wal_seq": result.head_wal_seq}
        if result.applied:
            _log.info(
                "applied %d records, at wal_seq %d of %d",
                result.applied,
                result.last_wal_seq,
                result.head_wal_seq,
            )
        if result.applied == 0:
            stop.wait(poll_interval_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m functions.projector", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", nargs="?", default="run", choices=("run", "once", "rebuild"))
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"records per page (1..{MAX_LIMIT})")
    parser.add_argument("--name", default=DEFAULT_NAME, help="cursor name")
    parser.add_argument("--poll-interval-s", type=float, default=POLL_INTERVAL_S)
    parser.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT, help="0: no health endpoint")
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= MAX_LIMIT:
        parser.error(f"--limit must be within 1..{MAX_LIMIT}")
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    from emlib.resources import Resources

    database_url = Resources(settings).database_url
    source = HostEventSource.from_settings(settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        projector = Projector(conn, source, args.name)
        try:
            if args.command == "rebuild":
                count = projector.rebuild(args.limit)
                print(f"rebuilt: {count} records, cursor at {projector.cursor()}")
                return 0
            if args.command == "once":
                count = projector.catch_up(args.limit)
                print(f"applied {count} records, cursor at {projector.cursor()}")
                return 0
        except EventsTooOldError as exc:
            print(f"sequence_too_old: {exc}", file=sys.stderr)
            return 2
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        health = _Health(args.health_port) if args.health_port else None
        if health is not None:
            health.start()
        try:
            run_forever(
                projector, stop, limit=args.limit, poll_interval_s=args.poll_interval_s, health=health
            )
        finally:
            if health is not None:
                health.close()
            source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
