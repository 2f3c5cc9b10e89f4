"""Price alerts firing and delivery: once per alert under repeated and concurrent evaluation,
the cursor over rm_trades, the outbox retrying failed deliveries, and end to end through a real
orderbook host (trades → projector → evaluator → `POST /notify` → `agent:{user_id}`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from emlib.settings import Settings
from functions import alerts, auth
from functions.app import create_app
from functions.orderbook_client import OrderbookClient
from functions.projector import HostEventSource, Projector
from tests.integration.test_search import Api, add_market, add_trade
from tests.support import functions_stack
from tests.support.functions_stack import FunctionsStack
from tests.support.host_process import TEST_HMAC_KEY

stack = functions_stack.stack  # the fixture: functions app + a real orderbook host


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(APP_ENV="test", DATABASE_URL=db_url, DATA_DIR=str(tmp_path))
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client, app.state.resources, settings)
    app.state.orderbook.close()
    app.state.resources.close()


class RecordingNotifier:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def notify(self, account: str, message: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("host unreachable")
        with self._lock:
            self.sent.append((account, message))
        return {}


def new_user(
    client: TestClient, settings: Settings, resources: Any, username: str
) -> tuple[str, dict[str, str]]:
    with resources.pool.connection() as conn:
        user = auth.insert_user(conn, auth.new_user_id(), username, None, "viewer")
    token, _ = auth.TokenCodec(settings).mint(user.principal(), time.time())
    return user.id, {"Authorization": f"Bearer {token}"}


def create_alert(api: Api, headers: dict[str, str], symbol: str, direction: str, price: int) -> str:
    response = api.client.post(
        "/api/v1/alerts", json={"symbol": symbol, "direction": direction, "price": price}, headers=headers
    )
    assert response.status_code == 201, response.text
    alert_id: str = response.json()["id"]
    return alert_id


def now_ms() -> int:
    return int(time.time() * 1000)


def alert_rows(api: Api) -> dict[str, tuple[Any, ...]]:
    with api.resources.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, triggered_at, trigger_price_ticks, trigger_trade_id, delivered_at FROM price_alerts"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_evaluate_fires_each_alert_once_however_often_it_runs(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    _, alice = new_user(api.client, api.settings, api.resources, "alice")
    above = create_alert(api, alice, "CPI-1", "above", 60)
    below = create_alert(api, alice, "CPI-1", "below", 40)
    later = now_ms() + 5
    trades = [
        alerts.Trade(1, "CPI-1", 55, later),
        alerts.Trade(2, "CPI-1", 61, later),  # sets off `above`
        alerts.Trade(3, "CPI-1", 65, later),  # would again: already fired
        alerts.Trade(4, "OTHER", 10, later),
    ]
    with api.resources.pool.connection() as conn:
        fired = alerts.evaluate(conn, trades)
    assert [(f.id, f.trigger_price_ticks, f.trigger_trade_id) for f in fired] == [(above, 61, 2)]
    with api.resources.pool.connection() as conn:
        assert alerts.evaluate(conn, trades) == []
    rows = alert_rows(api)
    assert rows[above][1:3] == (61, 2)
    assert rows[below][0] is None
    with api.resources.pool.connection() as conn:
        assert [f.id for f in alerts.evaluate(conn, [alerts.Trade(5, "CPI-1", 40, later)])] == [below]


def test_concurrent_evaluators_fire_each_alert_once(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    _, alice = new_user(api.client, api.settings, api.resources, "alice")
    ids = {create_alert(api, alice, "CPI-1", "above", 50 + i) for i in range(20)}
    trades = [alerts.Trade(i, "CPI-1", 50 + i, now_ms() + 5) for i in range(1, 25)]
    barrier = threading.Barrier(4)
    results: list[list[str]] = []
    lock = threading.Lock()

    def run() -> None:
        with psycopg.connect(api.settings.database_url) as conn:
            barrier.wait()
            fired = alerts.evaluate(conn, trades)
            conn.commit()
        with lock:
            results.append([f.id for f in fired])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [alert_id for result in results for alert_id in result]
    assert sorted(everything) == sorted(ids)  # every alert fired, none twice


def test_a_trade_before_the_alert_does_not_fire_it(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    _, alice = new_user(api.client, api.settings, api.resources, "alice")
    before = now_ms() - 60_000
    alert_id = create_alert(api, alice, "CPI-1", "above", 60)
    with api.resources.pool.connection() as conn:
        assert alerts.evaluate(conn, [alerts.Trade(1, "CPI-1", 90, before)]) == []
        assert [f.id for f in alerts.evaluate(conn, [alerts.Trade(2, "CPI-1", 90, now_ms() + 5)])] == [
            alert_id
        ]


def test_run_once_follows_its_cursor_and_delivers_once(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    alice_id, alice = new_user(api.client, api.settings, api.resources, "alice")
    above = create_alert(api, alice, "CPI-1", "above", 60)
    below = create_alert(api, alice, "CPI-1", "below", 20)
    later = now_ms() + 5
    for price in (50, 55, 58, 59, 70):
        add_trade(api.resources, "CPI-1", price, 1, later)
    notifier = RecordingNotifier()
    result = alerts.run_once(api.resources.pool, notifier, batch_max=2)  # three batches
    assert (result.trades, result.fired, result.delivered, result.failed) == (5, 1, 1, 0)
    assert notifier.sent == [(alice_id, notifier.sent[0][1])]
    message = notifier.sent[0][1]
    assert message["type"] == "alert" and message["alert_id"] == above and message["trade_price"] == 70
    # nothing new: nothing evaluated, nothing sent again
    again = alerts.run_once(api.resources.pool, notifier)
    assert (again.trades, again.fired, again.delivered) == (0, 0, 0)
    assert again.last_trade_id == result.last_trade_id
    assert len(notifier.sent) == 1
    # a new trade after the cursor sets off the other alert
    add_trade(api.resources, "CPI-1", 15, 1, now_ms() + 5)
    third = alerts.run_once(api.resources.pool, notifier)
    assert (third.trades, third.fired, third.delivered) == (1, 1, 1)
    assert [m["alert_id"] for _, m in notifier.sent] == [above, below]
    listed = api.client.get("/api/v1/alerts", params={"status": "triggered"}, headers=alice).json()["items"]
    assert {a["id"] for a in listed} == {above, below}
    assert all(a["delivered_at"] is not None for a in listed)


def test_failed_deliveries_stay_pending_then_go_out(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    _, alice = new_user(api.client, api.settings, api.resources, "alice")
    alert_id = create_alert(api, alice, "CPI-1", "above", 60)
    add_trade(api.resources, "CPI-1", 60, 1, now_ms() + 5)
    down = RecordingNotifier(fail=True)
    first = alerts.run_once(api.resources.pool, down)
    assert (first.fired, first.delivered, first.failed) == (1, 0, 1)
    assert alert_rows(api)[alert_id][3] is None
    up = RecordingNotifier()
    second = alerts.run_once(api.resources.pool, up)
    assert (second.fired, second.delivered, second.failed) == (0, 1, 0)
    assert [m["alert_id"] for _, m in up.sent] == [alert_id]
    # a delivery that keeps failing is given up after the attempt limit
    other = create_alert(api, alice, "CPI-1", "below", 10)
    add_trade(api.resources, "CPI-1", 5, 1, now_ms() + 5)
    for _ in range(alerts.DELIVERY_ATTEMPTS_MAX + 2):
        alerts.run_once(api.resources.pool, down)
    assert alerts.run_once(api.resources.pool, up).delivered == 0
    with api.resources.pool.connection() as conn:
        row = conn.execute(
            "SELECT delivery_attempts, last_delivery_error FROM price_alerts WHERE id = %s", (other,)
        ).fetchone()
    assert row == (alerts.DELIVERY_ATTEMPTS_MAX, "RuntimeError: host unreachable")


def test_alert_delivered_on_the_agent_channel_through_a_real_host(stack: FunctionsStack) -> None:
    app = stack.client.app
    resources = app.state.resources  # type: ignore[attr-defined]
    api = Api(stack.client, resources, stack.settings)
    add_market(resources, "CPI-1", "CPI above 3")
    alice_id, alice = new_user(stack.client, stack.settings, resources, "alice")
    with stack.host.client() as host:
        host.post("/markets", json={"symbol": "CPI-1", "kind": "binary"}).raise_for_status()
        for account in (alice_id, "maker", "taker"):
            host.post(f"/accounts/{account}/deposit", json={"amount_minor": 1_000_000}).raise_for_status()
        above = create_alert(api, alice, "CPI-1", "above", 60)
        create_alert(api, alice, "CPI-1", "below", 10)
        time.sleep(0.01)  # the host stamps trades in ms; the alert must come first
        for price in (55, 62):
            sell = {"account": "maker", "symbol": "CPI-1", "side": "sell", "price": price, "quantity": 1}
            host.post("/order", json=sell).raise_for_status()
            buy = {"account": "taker", "symbol": "CPI-1", "side": "buy", "price": price, "quantity": 1}
            assert host.post("/order", json=buy).json()["fills"], "expected a trade"

        source = HostEventSource(stack.host.url, TEST_HMAC_KEY)
        try:
            with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
                Projector(conn, source).catch_up(limit=50)
        finally:
            source.close()
        client = OrderbookClient(stack.settings)
        try:
            first = alerts.run_once(resources.pool, client)
            second = alerts.run_once(resources.pool, client)
        finally:
            client.close()
        assert (first.trades, first.fired, first.delivered, first.failed) == (2, 1, 1, 0)
        assert (second.trades, second.fired, second.delivered) == (0, 0, 0)

        records = host.get("/events", params={"after": 0, "limit": 1000}).json()["records"]
    notices = [e for r in records for e in r["events"] if e["type"] == "notice"]
    assert len(notices) == 1
    notice = notices[0]
    assert notice["account"] == alice_id
    assert notice["message"]["alert_id"] == above
    assert notice["message"]["trade_price"] == 62
    triggered_at = datetime.fromisoformat(notice["message"]["triggered_at"].replace("Z", "+00:00"))
    assert triggered_at.tzinfo == UTC


def test_command_line_run_once(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from emlib.settings import get_settings

    add_market(api.resources, "CPI-1", "CPI above 3")
    add_trade(api.resources, "CPI-1", 50, 1, now_ms())
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("DATABASE_URL", api.settings.database_url)
    monkeypatch.setenv("ORDERBOOK_URL", "http://127.0.0.1:9")  # nothing fires, so nothing is sent
    get_settings.cache_clear()
    try:
        assert alerts.main(["run-once"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert '"trades": 1' in out and '"fired": 0' in out
    with pytest.raises(SystemExit):
        alerts.main(["bogus"])
