"""Read routes against the functions app, real PostgreSQL and a real orderbook host.

The snapshot is proxied live (contract fields, `since`, 410 passed through); trades, candles,
fills and the leaderboard read what the projector wrote, which must agree with the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from functions import read_model as rm
from functions.projector import HostEventSource, Projector
from tests.support import functions_stack
from tests.support.functions_stack import FunctionsStack, make_settings
from tests.support.host_process import TEST_HMAC_KEY, HostProcess

stack = functions_stack.stack

SNAPSHOT_KEYS = {"symbol", "status", "last_sequence", "bids", "asks", "last_trade"}


def _project(stack: FunctionsStack) -> int:
    source = HostEventSource(stack.host.url, TEST_HMAC_KEY)
    try:
        with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
            return Projector(conn, source).catch_up(limit=50)
    finally:
        source.close()


def _register(client: TestClient, username: str) -> tuple[str, dict[str, str]]:
    password = "correct-horse-battery-staple-9"
    registered = client.post("/api/v1/auth/register", json={"username": username, "password": password})
    assert registered.status_code == 201, registered.text
    login = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return registered.json()["user_id"], {"Authorization": f"Bearer {login.json()['access_token']}"}


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_snapshot_contract_fields_and_since(stack: FunctionsStack) -> None:
    with stack.host.client() as host:
        host.post("/markets", json={"symbol": "SNAP-1", "kind": "binary"}).raise_for_status()
        host.post("/accounts/a1/deposit", json={"amount_minor": 100_000}).raise_for_status()
        host.post("/accounts/a2/deposit", json={"amount_minor": 100_000}).raise_for_status()
        for price in (40, 41, 42):
            host.post(
                "/order",
                json={"account": "a1", "symbol": "SNAP-1", "side": "buy", "price": price, "quantity": 3},
            ).raise_for_status()
        host.post(
            "/order", json={"account": "a2", "symbol": "SNAP-1", "side": "sell", "price": 42, "quantity": 1}
        ).raise_for_status()
        direct = host.get("/snapshot", params={"symbol": "SNAP-1"}).json()
    client = stack.client
    body = client.get("/api/v1/market/SNAP-1/snapshot").json()
    assert set(body) == SNAPSHOT_KEYS  # no `events` without `since`
    assert body["bids"] == [[42, 2], [41, 3], [40, 3]] and body["asks"] == []
    assert body["last_trade"]["price"] == 42 and body["status"] == "open"
    assert body["last_sequence"] == direct["last_sequence"] > 0
    full = client.get("/api/v1/market/SNAP-1/snapshot", params={"since": 0}).json()
    assert set(full) == SNAPSHOT_KEYS | {"events"}
    seqs = [e["sequence_number"] for e in full["events"]]
    assert seqs == list(range(1, body["last_sequence"] + 1))
    assert {e["payload"]["type"] for e in full["events"]} >= {"book", "trade", "order_accepted"}
    tail = client.get("/api/v1/market/SNAP-1/snapshot", params={"since": body["last_sequence"]}).json()
    assert tail["events"] == []
    _problem(client.get("/api/v1/market/NOPE-1/snapshot"), 404, "unknown_symbol")
    _problem(client.get("/api/v1/market/lower/snapshot"), 422, "validation_error")
    _problem(client.get("/api/v1/market/SNAP-1/snapshot", params={"since": -1}), 422, "validation_error")
    _problem(client.get("/api/v1/market/SNAP-1/snapshot", params={"since": "x"}), 422, "validation_error")


@pytest.fixture
def small_buffer_stack(db_url: str, tmp_path: Path) -> Iterator[FunctionsStack]:
    from functions.app import create_app

    host = HostProcess(tmp_path / "host", replay_buffer_size=3)
    host.start()
    try:
        app = create_app(make_settings(db_url, tmp_path / "functions", host))
        with TestClient(app) as client:
            yield FunctionsStack(app.state.resources.settings, host, client)
        app.state.orderbook.close()
        app.state.resources.close()
    finally:
        host.stop()


def test_snapshot_since_older_than_retention_is_410(small_buffer_stack: FunctionsStack) -> None:
    stack = small_buffer_stack
    with stack.host.client() as host:
        host.post("/markets", json={"symbol": "OLD-1", "kind": "binary"}).raise_for_status()
        host.post("/accounts/a1/deposit", json={"amount_minor": 100_000}).raise_for_status()
        for price in range(30, 40):
            host.post(
                "/order",
                json={"account": "a1", "symbol": "OLD-1", "side": "buy", "price": price, "quantity": 1},
            ).raise_for_status()
    last = stack.client.get("/api/v1/market/OLD-1/snapshot").json()["last_sequence"]
    assert last > 10
    _problem(stack.client.get("/api/v1/market/OLD-1/snapshot", params={"since": 1}), 410, "sequence_too_old")
    recent = stack.client.get("/api/v1/market/OLD-1/snapshot", params={"since": last - 2}).json()
    assert [e["sequence_number"] for e in recent["events"]] == [last - 1, last]


def test_trades_candles_fills_leaderboard(stack: FunctionsStack) -> None:
    client = stack.client
    alice, alice_auth = _register(client, "alice-reads")
    bob, bob_auth = _register(client, "bob-reads")
    carol, _ = _register(client, "carol-reads")
    with stack.host.client() as host:
        host.post("/markets", json={"symbol": "RD-1", "kind": "binary"}).raise_for_status()
        for n in range(12):
            buyer, seller = (alice, bob) if n % 3 else (bob, alice)
            price = 30 + n
            host.post(
                "/order",
                json={
                    "account": seller,
                    "symbol": "RD-1",
                    "side": "sell",
                    "price": price,
                    "quantity": 1 + n % 2,
                },
            ).raise_for_status()
            host.post(
                "/order",
                json={
                    "account": buyer,
                    "symbol": "RD-1",
                    "side": "buy",
                    "price": price,
                    "quantity": 1 + n % 2,
                },
            ).raise_for_status()
        stream = host.get("/events", params={"after": 0, "limit": 10_000}).json()["records"]
    trades = [e for r in stream for e in r["events"] if e["type"] == "trade"]
    assert len(trades) == 12
    assert _project(stack) == len(stream)

    # trades: newest first, keyset pages of 5 walk all of them exactly once
    seen: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 5}
        if before is not None:
            params["before"] = before
        page = client.get("/api/v1/market/RD-1/trades", params=params).json()
        seen += page["items"]
        assert page["as_of_wal_seq"] == len(stream)
        before = page["next_before"]
        if before is None:
            break
    assert [t["trade_id"] for t in seen] == [t["trade_id"] for t in reversed(trades)]
    assert seen[0]["price"] == trades[-1]["price"] and seen[0]["ts"] == rm.rfc3339_ms(trades[-1]["ts_ms"])
    assert "maker_account" not in seen[0]
    assert client.get("/api/v1/market/NONE-1/trades").json()["items"] == []

    # candles equal the reference fold; from/to select by bucket start
    expected = rm.fold_candles(("RD-1", t["price"], t["quantity"], t["ts_ms"]) for t in trades)
    minutes = [c for c in expected if c.interval == "1m"]
    body = client.get("/api/v1/market/RD-1/candles", params={"interval": "1m"}).json()
    assert [
        (c["start_ms"], c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in body["items"]
    ] == [(c.bucket_start_ms, c.open, c.high, c.low, c.close, c.volume) for c in minutes]
    day = [c for c in expected if c.interval == "1d"]
    first = day[0].bucket_start_ms
    iso = rm.rfc3339_ms(first)
    for params in (
        {"from": str(first)},
        {"from": iso, "to": str(first + 86_400_000)},
        {"to": iso.replace("Z", "+00:00")},
    ):
        got = client.get("/api/v1/market/RD-1/candles", params={"interval": "1d", **params}).json()["items"]
        want = [] if "from" not in params else [c.bucket_start_ms for c in day if c.bucket_start_ms >= first]
        assert [c["start_ms"] for c in got] == want[: len(want)], params
    assert (
        client.get("/api/v1/market/RD-1/candles", params={"interval": "1h"}).json()["items"][-1]["close"]
        == 41
    )

    # my fills: only mine, both liquidities, newest first; others' are not visible
    mine = client.get("/api/v1/fills", headers=alice_auth, params={"limit": 100}).json()["items"]
    assert len(mine) == 12 and {f["liquidity"] for f in mine} == {"maker", "taker"}
    assert sum(f["quantity"] if f["side"] == "buy" else -f["quantity"] for f in mine) == sum(
        t["quantity"] if t["taker_account"] == alice else -t["quantity"] for t in trades
    )
    page = client.get("/api/v1/fills", headers=bob_auth, params={"limit": 4, "symbol": "RD-1"}).json()
    assert len(page["items"]) == 4 and page["next_before"] == page["items"][-1]["trade_id"]
    _problem(client.get("/api/v1/fills"), 401, "not_authenticated")

    # leaderboard: net worth conserves the deposits (longs pair with shorts at settle_max)
    board = client.get("/api/v1/leaderboard").json()
    worth = {e["account"]: e["net_worth_minor"] for e in board["items"]}
    assert set(worth) == {alice, bob, carol} and worth[carol] == 1_000_000
    assert sum(worth.values()) == 3 * 1_000_000
    assert [e["rank"] for e in board["items"]] == [1, 2, 3]
    assert [e["net_worth_minor"] for e in board["items"]] == sorted(worth.values(), reverse=True)
    with stack.host.client() as host:
        for account in (alice, bob):
            view = host.get(f"/accounts/{account}").json()
            pos = view["positions"].get("RD-1", {"long": 0, "short": 0})
            marked = rm.position_value_minor(pos["long"], pos["short"], trades[-1]["price"], 100, 1)
            assert worth[account] == view["cash_minor"] + view["reserved_minor"] + marked
    daily = client.get("/api/v1/leaderboard", params={"period": "daily"}).json()
    change = {e["account"]: e["change_minor"] for e in daily["items"]}
    # everything happened today: each change is the worth minus the day's deposit
    assert change == {a: w - 1_000_000 for a, w in worth.items()}
    assert daily["day"] == rm.utc_day(trades[-1]["ts_ms"]).isoformat()


def test_bad_query_params_are_4xx(stack: FunctionsStack) -> None:
    c = stack.client
    bad = [
        ("/api/v1/market/RD-1/candles", {"interval": "5m"}, 422, "invalid_enum"),
        ("/api/v1/market/RD-1/candles", {"from": "yesterday"}, 422, "invalid_time"),
        ("/api/v1/market/RD-1/candles", {"from": "2026-01-01T00:00:00"}, 422, "invalid_time"),
        ("/api/v1/market/RD-1/candles", {"from": "2000", "to": "1000"}, 422, "invalid_range"),
        ("/api/v1/market/RD-1/candles", {"from": "9" * 30}, 422, "invalid_time"),
        ("/api/v1/market/RD-1/candles", {"limit": "0"}, 422, "validation_error"),
        ("/api/v1/market/RD-1/trades", {"limit": "501"}, 422, "validation_error"),
        ("/api/v1/market/RD-1/trades", {"before": "0"}, 422, "validation_error"),
        ("/api/v1/market/RD-1/trades", {"before": "abc"}, 422, "validation_error"),
        ("/api/v1/market/bad%20sym/trades", {}, 422, "validation_error"),
        ("/api/v1/leaderboard", {"period": "weekly"}, 422, "invalid_enum"),
        ("/api/v1/leaderboard", {"limit": "100000"}, 422, "validation_error"),
    ]
    for path, params, status, code in bad:
        response = c.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert response.json()["code"] == code, (path, params, response.text)
