"""Watchlists and price-alert endpoints against real PostgreSQL: CRUD, limits, auth, bad input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emlib.resources import Resources
from emlib.settings import Settings
from functions import auth
from functions.app import create_app
from functions.routers.watchlists import WATCHLIST_MAX
from tests.integration.test_search import Api, add_market


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(APP_ENV="test", DATABASE_URL=db_url, DATA_DIR=str(tmp_path))
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client, app.state.resources, settings)
    app.state.orderbook.close()
    app.state.resources.close()


def login(api: Api, username: str) -> tuple[str, dict[str, str]]:
    """A user and the headers that authenticate them."""
    # Straight to the table (no password: argon2 would cost most of these tests' time).
    with api.resources.pool.connection() as conn:
        user = auth.insert_user(conn, auth.new_user_id(), username, None, "viewer")
    token, _ = auth.TokenCodec(api.settings).mint(user.principal(), time.time())
    return user.id, {"Authorization": f"Bearer {token}"}


def bulk_markets(resources: Resources, count: int, prefix: str = "BULK") -> list[str]:
    """Many open markets sharing one approval event (the cap tests need hundreds)."""
    audit_id = resources.audit_log().append(actor="u-admin", action="approve_market", target=prefix).id
    symbols = [f"{prefix}-{i:03d}" for i in range(count)]
    with resources.pool.connection() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO markets (symbol, title, type, risk_level, kind, tick_size, price_min, price_max,"
            " status, created_by, human_approval_audit_id, resolution_criteria)"
            " VALUES (%s, %s, 'economic', 'low', 'binary', 1, 1, 99, 'open', 'u-x', %s, 'source')",
            [(s, f"Bulk market {s}", audit_id) for s in symbols],
        )
    return symbols


def code(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    result: str = response.json()["code"]
    return result


# --- watchlist ---------------------------------------------------------------------------


def test_watchlist_add_list_remove(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    add_market(api.resources, "GDP-1", "GDP grows")
    _, alice = login(api, "alice")
    c = api.client
    first = c.put("/api/v1/watchlist/CPI-1", headers=alice)
    assert first.status_code == 201, first.text
    assert first.json()["symbol"] == "CPI-1" and first.json()["title"] == "CPI above 3"
    again = c.put("/api/v1/watchlist/CPI-1", headers=alice)
    assert again.status_code == 200
    assert again.json()["added_at"] == first.json()["added_at"]
    assert c.put("/api/v1/watchlist/GDP-1", headers=alice).status_code == 201
    listed = c.get("/api/v1/watchlist", headers=alice).json()
    assert [i["symbol"] for i in listed["items"]] == ["GDP-1", "CPI-1"]  # newest first
    assert listed["limit"] == WATCHLIST_MAX
    assert c.delete("/api/v1/watchlist/CPI-1", headers=alice).status_code == 204
    assert c.delete("/api/v1/watchlist/CPI-1", headers=alice).status_code == 204  # idempotent
    assert [i["symbol"] for i in c.get("/api/v1/watchlist", headers=alice).json()["items"]] == ["GDP-1"]


def test_watchlists_are_private_and_need_a_session(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    _, alice = login(api, "alice")
    _, bob = login(api, "bob")
    assert api.client.put("/api/v1/watchlist/CPI-1", headers=alice).status_code == 201
    assert api.client.get("/api/v1/watchlist", headers=bob).json()["items"] == []
    assert api.client.delete("/api/v1/watchlist/CPI-1", headers=bob).status_code == 204
    assert len(api.client.get("/api/v1/watchlist", headers=alice).json()["items"]) == 1
    for method, path in [("GET", "/api/v1/watchlist"), ("PUT", "/api/v1/watchlist/CPI-1")]:
        anonymous = api.client.request(method, path)
        assert anonymous.status_code == 401 and code(anonymous) == "not_authenticated"
        forged = api.client.request(method, path, headers={"Authorization": "Bearer not.a.jwt"})
        assert forged.status_code == 401 and code(forged) == "invalid_token"


def test_watchlist_refuses_unknown_and_unlisted_markets(api: Api) -> None:
    add_market(api.resources, "REQ-1", "Only requested", status="requested")
    _, alice = login(api, "alice")
    for symbol in ("NOPE-1", "REQ-1"):
        response = api.client.put(f"/api/v1/watchlist/{symbol}", headers=alice)
        assert response.status_code == 404 and code(response) == "unknown_market"
    bad = api.client.put("/api/v1/watchlist/lower-case", headers=alice)
    assert bad.status_code == 422
    assert api.client.get("/api/v1/watchlist", headers=alice).json()["items"] == []


def test_watchlist_cap_holds_under_concurrent_adds(api: Api) -> None:
    symbols = bulk_markets(api.resources, WATCHLIST_MAX + 4)
    user_id, alice = login(api, "alice")
    with api.resources.pool.connection() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO watchlist_items (user_id, symbol) VALUES (%s, %s)",
            [(user_id, s) for s in symbols[: WATCHLIST_MAX - 2]],
        )
    # six adds race for the last two slots
    results: list[int] = []
    lock = threading.Lock()

    def add(symbol: str) -> None:
        response = api.client.put(f"/api/v1/watchlist/{symbol}", headers=alice)
        with lock:
            results.append(response.status_code)
            if response.status_code == 409:
                assert code(response) == "watchlist_full"

    threads = [threading.Thread(target=add, args=(s,)) for s in symbols[WATCHLIST_MAX - 2 :]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201, 201, 409, 409, 409, 409]
    assert len(api.client.get("/api/v1/watchlist", headers=alice).json()["items"]) == WATCHLIST_MAX
    # a market already listed is still a 200 at the cap; removing one frees a slot
    listed = symbols[0]
    assert api.client.put(f"/api/v1/watchlist/{listed}", headers=alice).status_code == 200
    assert api.client.delete(f"/api/v1/watchlist/{listed}", headers=alice).status_code == 204
    assert api.client.put(f"/api/v1/watchlist/{symbols[-1]}", headers=alice).status_code in (201, 200)


# --- alerts ------------------------------------------------------------------------------


def test_alert_create_list_delete(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    _, alice = login(api, "alice")
    _, bob = login(api, "bob")
    c = api.client
    created = c.post(
        "/api/v1/alerts", json={"symbol": "CPI-1", "direction": "above", "price": 60}, headers=alice
    )
    assert created.status_code == 201, created.text
    alert = created.json()
    assert alert["status"] == "active" and alert["price"] == 60 and alert["direction"] == "above"
    assert alert["triggered_at"] is None and alert["id"].startswith("al-")
    below = c.post(
        "/api/v1/alerts", json={"symbol": "CPI-1", "direction": "below", "price": 1}, headers=alice
    )
    assert below.status_code == 201
    listed = c.get("/api/v1/alerts", headers=alice).json()
    assert [a["id"] for a in listed["items"]] == [below.json()["id"], alert["id"]]
    assert listed["active_limit"] == 50
    assert c.get("/api/v1/alerts", headers=bob).json()["items"] == []
    assert c.get("/api/v1/alerts", params={"status": "triggered"}, headers=alice).json()["items"] == []
    # another user's alert is as unknown as a missing one
    refused = c.delete(f"/api/v1/alerts/{alert['id']}", headers=bob)
    assert refused.status_code == 404 and code(refused) == "unknown_alert"
    assert c.delete(f"/api/v1/alerts/{alert['id']}", headers=alice).status_code == 204
    gone = c.delete(f"/api/v1/alerts/{alert['id']}", headers=alice)
    assert gone.status_code == 404 and code(gone) == "unknown_alert"
    assert [a["id"] for a in c.get("/api/v1/alerts", headers=alice).json()["items"]] == [below.json()["id"]]
    assert c.delete("/api/v1/alerts/not-an-id", headers=alice).status_code == 422
    assert c.get("/api/v1/alerts").status_code == 401


BAD_ALERTS: list[tuple[dict[str, Any], int, str]] = [
    ({"symbol": "CPI-1", "direction": "above", "price": 0}, 422, "invalid_price"),
    ({"symbol": "CPI-1", "direction": "above", "price": 100}, 422, "invalid_price"),
    ({"symbol": "IDX-1", "direction": "below", "price": 7}, 422, "invalid_price"),  # off the 5-tick grid
    ({"symbol": "IDX-1", "direction": "below", "price": 1005}, 422, "invalid_price"),
    ({"symbol": "CPI-1", "direction": "sideways", "price": 50}, 422, "invalid_enum"),
    ({"symbol": "CPI-1", "direction": "above", "price": 50.5}, 422, "validation_error"),
    ({"symbol": "CPI-1", "direction": "above", "price": "50"}, 422, "validation_error"),
    ({"symbol": "CPI-1", "direction": "above"}, 422, "missing_field"),
    ({"symbol": "CPI-1", "direction": "above", "price": 50, "note": "x"}, 422, "unknown_field"),
    ({"symbol": "NOPE-1", "direction": "above", "price": 50}, 404, "unknown_market"),
    ({"symbol": "REQ-1", "direction": "above", "price": 50}, 404, "unknown_market"),
    ({"symbol": "DONE-1", "direction": "above", "price": 50}, 409, "market_not_tradable"),
]


def test_alert_bad_input(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    add_market(api.resources, "IDX-1", "An index", kind="scalar", price_min=0, price_max=1000, tick_size=5)
    add_market(api.resources, "REQ-1", "Requested", status="requested")
    add_market(api.resources, "DONE-1", "Resolved", status="resolved")
    _, alice = login(api, "alice")
    for body, status, expected in BAD_ALERTS:
        response = api.client.post("/api/v1/alerts", json=body, headers=alice)
        assert response.status_code == status, (body, response.text)
        assert code(response) == expected, body
    assert api.client.get("/api/v1/alerts", headers=alice).json()["items"] == []


def test_alert_cap_counts_active_alerts_only(api: Api) -> None:
    add_market(api.resources, "CPI-1", "CPI above 3")
    user_id, alice = login(api, "alice")
    body = {"symbol": "CPI-1", "direction": "above", "price": 60}
    for _ in range(50):
        assert api.client.post("/api/v1/alerts", json=body, headers=alice).status_code == 201
    full = api.client.post("/api/v1/alerts", json=body, headers=alice)
    assert full.status_code == 409 and code(full) == "alerts_full"
    # a triggered alert no longer counts
    with api.resources.pool.connection() as conn:
        conn.execute(
            "UPDATE price_alerts SET triggered_at = now(), trigger_price_ticks = 60"
            " WHERE id = (SELECT id FROM price_alerts WHERE user_id = %s LIMIT 1)",
            (user_id,),
        )
    assert api.client.post("/api/v1/alerts", json=body, headers=alice).status_code == 201
    triggered = api.client.get("/api/v1/alerts", params={"status": "triggered"}, headers=alice).json()
    assert [a["status"] for a in triggered["items"]] == ["triggered"]
