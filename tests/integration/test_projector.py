"""The projector against a real orderbook host and real PostgreSQL.

What must hold: the rm_* tables agree with the host's own views (balances, positions, open
orders, trades, last trade); applying the same records again changes nothing; a projector
SIGKILLed mid-stream and restarted ends with exactly the rows a from-scratch rebuild gives.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from functions import read_model as rm
from functions.projector import RM_TABLES, HostEventSource, Projector
from tests.support.host_process import ROOT, TEST_HMAC_KEY, HostProcess

ACCOUNTS = ("alice", "bob", "carol", "dave")


def trade_workload(client: httpx.Client, orders: int, seed: int = 7) -> None:
    """Markets, deposits, then random crossing orders with cancels, a replace, a halt/reopen."""
    rng = random.Random(seed)
    client.post("/markets", json={"symbol": "BIN", "kind": "binary"}).raise_for_status()
    client.post(
        "/markets",
        json={
            "symbol": "SCL",
            "kind": "scalar",
            "tick_size": 5,
            "price_min": 100,
            "price_max": 500,
            "multiplier_minor": 2,
            "allow_short": True,
        },
    ).raise_for_status()
    for account in ACCOUNTS:
        client.post(f"/accounts/{account}/deposit", json={"amount_minor": 1_000_000}).raise_for_status()
    open_ids: list[tuple[str, int]] = []
    for n in range(orders):
        account = rng.choice(ACCOUNTS)
        if n % 50 == 25:
            client.post("/markets/BIN/status", json={"status": "halted"}).raise_for_status()
            client.post("/markets/BIN/status", json={"status": "open"}).raise_for_status()
        if open_ids and n % 7 == 3:
            owner, oid = open_ids.pop(rng.randrange(len(open_ids)))
            client.post("/cancel", json={"account": owner, "server_order_id": oid})  # may be filled: 409
            continue
        if open_ids and n % 11 == 5:
            owner, oid = open_ids[-1]
            client.post(
                "/replace", json={"account": owner, "server_order_id": oid, "quantity": rng.randint(1, 5)}
            )
            continue
        if rng.random() < 0.6:
            body = {"symbol": "BIN", "price": rng.randint(40, 60)}
        else:
            body = {"symbol": "SCL", "price": rng.randrange(200, 400, 5)}
        body.update(account=account, side=rng.choice(("buy", "sell")), quantity=rng.randint(1, 6))
        response = client.post("/order", json=body)
        if response.status_code == 201 and response.json().get("status") in ("open", "partially_filled"):
            open_ids.append((account, response.json()["server_order_id"]))


def dump(db_url: str, tables: tuple[str, ...] = RM_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: two read models are equal when their dumps are."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(db_url) as conn:
        for table in tables:
            out[table] = sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    return out


def source_for(host: HostProcess) -> HostEventSource:
    return HostEventSource(host.url, TEST_HMAC_KEY)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostProcess]:
    process = HostProcess(tmp_path / "host")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_tables_match_the_hosts_views(host: HostProcess, db_url: str) -> None:
    with host.client() as client:
        trade_workload(client, 150)
        client.post("/markets/SCL/resolve", json={"settlement_price": 300}).raise_for_status()
        head = client.get("/events", params={"after": 0, "limit": 1}).json()["head_wal_seq"]
        source = source_for(host)
        with psycopg.connect(db_url, autocommit=True) as conn:
            projector = Projector(conn, source)
            applied = projector.catch_up(limit=37)
            assert applied == head and projector.cursor() == head
        # balances, positions and open orders equal the host's account views
        with psycopg.connect(db_url) as conn:
            for account in ACCOUNTS:
                view = client.get(f"/accounts/{account}").json()
                row = conn.execute(
                    "SELECT cash_minor, reserved_minor FROM rm_balances WHERE account = %s", (account,)
                ).fetchone()
                assert row == (view["cash_minor"], view["reserved_minor"])
                positions = conn.execute(
                    "SELECT symbol, position, long_quantity, short_quantity, locked_quantity"
                    " FROM rm_positions WHERE account = %s AND (long_quantity > 0 OR short_quantity > 0)"
                    " ORDER BY symbol",
                    (account,),
                ).fetchall()
                assert positions == [
                    (s, p["position"], p["long"], p["short"], p["locked"])
                    for s, p in view["positions"].items()
                ]
                open_orders = conn.execute(
                    "SELECT server_order_id, price, remaining, filled, status FROM rm_orders"
                    " WHERE account = %s AND status IN ('open', 'partially_filled') ORDER BY server_order_id",
                    (account,),
                ).fetchall()
                assert open_orders == [
                    (
                        o["server_order_id"],
                        o["price"],
                        o["remaining_quantity"],
                        o["filled_quantity"],
                        o["status"],
                    )
                    for o in view["open_orders"]
                ]
                assert "SCL" not in view["positions"]  # settled: positions closed on both sides
            # every trade of the stream is a row; the last one is the host's last trade
            stream = []
            after = 0
            while True:
                page = client.get("/events", params={"after": after, "limit": 1000}).json()
                if not page["records"]:
                    break
                stream += [e for r in page["records"] for e in r["events"] if e["type"] == "trade"]
                after = page["last_wal_seq"]
            trades = conn.execute(
                "SELECT trade_id, symbol, price, quantity, taker_side, maker_account, taker_account, ts_ms"
                " FROM rm_trades ORDER BY trade_id"
            ).fetchall()
            assert len(stream) > 20
            assert trades == [
                (
                    t["trade_id"],
                    t["symbol"],
                    t["price"],
                    t["quantity"],
                    t["taker_side"],
                    t["maker_account"],
                    t["taker_account"],
                    t["ts_ms"],
                )
                for t in stream
            ]
            for symbol in ("BIN", "SCL"):
                last = client.get("/snapshot", params={"symbol": symbol}).json()["last_trade"]
                row = conn.execute(
                    "SELECT last_trade_id, last_price, last_trade_ts_ms FROM rm_markets WHERE symbol = %s",
                    (symbol,),
                ).fetchone()
                assert row == (last["trade_id"], last["price"], last["ts_ms"])
            # candles equal the pure reference fold of the same trades
            candles = conn.execute(
                "SELECT symbol, interval, bucket_start_ms, open, high, low, close, volume, trade_count"
                " FROM rm_candles ORDER BY symbol, interval, bucket_start_ms"
            ).fetchall()
            expected = rm.fold_candles((t["symbol"], t["price"], t["quantity"], t["ts_ms"]) for t in stream)
            assert candles == [
                (
                    c.symbol,
                    c.interval,
                    c.bucket_start_ms,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.trade_count,
                )
                for c in expected
            ]
            # two fills per trade, and every fill's order exists with the filled total
            assert conn.execute("SELECT count(*) FROM rm_fills").fetchone() == (2 * len(stream),)
            mismatched = conn.execute(
                "SELECT o.server_order_id FROM rm_orders o LEFT JOIN (SELECT server_order_id, sum(quantity) q"
                " FROM rm_fills GROUP BY 1) f USING (server_order_id) WHERE o.filled <> COALESCE(f.q, 0)"
            ).fetchall()
            assert mismatched == []
            status = conn.execute(
                "SELECT status, settlement_price FROM rm_markets WHERE symbol = 'SCL'"
            ).fetchone()
            assert status == ("settled", 300)
        source.close()


def test_applying_the_same_records_twice_changes_nothing(host: HostProcess, db_url: str) -> None:
    with host.client() as client:
        trade_workload(client, 60)
        records = client.get("/events", params={"after": 0, "limit": 10_000}).json()["records"]
    source = source_for(host)
    with psycopg.connect(db_url, autocommit=True) as conn:
        projector = Projector(conn, source)
        assert projector.apply_page(records[:40]) == (40, 40)
        once = dump(db_url)
        # the same page again, and an overlapping one: only the unseen records apply
        assert projector.apply_page(records[:40]) == (0, 40)
        assert dump(db_url) == once
        assert projector.apply_page(records[30:]) == (len(records) - 40, len(records))
        full = dump(db_url)
        assert projector.apply_page(records) == (0, len(records))
        assert projector.catch_up() == 0
        assert dump(db_url) == full
        # a page fetched from a cursor the database no longer has (a rebuild reset it) is dropped
        assert projector.rebuild() == len(records)
        assert dump(db_url) == full
    source.close()


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _cursor(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT last_wal_seq FROM rm_cursor WHERE projector = 'main'").fetchone()
    return int(row[0]) if row else 0


def _spawn_projector(host: HostProcess, db_url: str, log: Path, limit: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": db_url,
        "ORDERBOOK_URL": host.url,
        "HMAC_KEYS": f'[{{"id": "{TEST_HMAC_KEY.id}", "secret": "{TEST_HMAC_KEY.secret}"}}]',
        "PYTHONPATH": str(ROOT),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions.projector",
                "run",
                "--limit",
                str(limit),
                "--health-port",
                "0",
                "--poll-interval-s",
                "0.02",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_killed_mid_stream_then_restarted_equals_a_rebuild(
    host: HostProcess, db_url: str, tmp_path: Path
) -> None:
    with host.client() as client:
        trade_workload(client, 400, seed=11)
        head = client.get("/events", params={"after": 0, "limit": 1}).json()["head_wal_seq"]
    assert head > 300
    log = tmp_path / "projector.log"
    kills = 0
    # kill it twice at different points, each time well inside the stream
    for target in (head // 4, head // 2):
        process = _spawn_projector(host, db_url, log, limit=3)
        try:
            _wait(lambda t=target: _cursor(db_url) >= t, 60, f"cursor {target}")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        kills += 1
        assert _cursor(db_url) < head, log.read_text()
    process = _spawn_projector(host, db_url, log, limit=3)
    try:
        _wait(lambda: _cursor(db_url) == head, 90, "the head")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log.read_text()
    assert kills == 2
    resumed = dump(db_url)
    assert len(resumed["rm_trades"]) > 50
    source = source_for(host)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert Projector(conn, source).rebuild(limit=200) == head
    assert dump(db_url) == resumed
    source.close()
