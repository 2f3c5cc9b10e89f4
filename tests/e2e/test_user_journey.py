# ruff: noqa: F811  (the `stack` fixture is imported, then named by the test)
"""The product driven as a user would, through the public API only (plus the projector).

Real PostgreSQL and a real orderbook host process behind the functions app:
two users register (funded through the host's deposit) → one requests an economic market and
a political one → an admin approves with TOTP (the political one needs a second admin) → an
admin opens them → the users trade crossing orders while a WebSocket client watches the
market channel → positions, P&L, trades, candles and the leaderboard show the trades → an
admin closes and resolves → settlement pays exactly what the money model says → the audit
log verifies with one event per admin decision.

Money model (docs/specs/orderbook_host.md): a binary contract settles at 0 or 100 minor
units (multiplier 1). A buy costs price * quantity; a short sale locks (100 - price) *
quantity as collateral, net of the price received. Net worth = cash + reserved + long *
mark + short * (100 - mark), so the two traders' net worth always sums to their deposits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
import pyotp
from fastapi.testclient import TestClient
from websockets.sync.client import ClientConnection, connect

from functions.auth import STARTING_BALANCE_MINOR, AuthConfig, create_user
from functions.projector import HostEventSource, Projector
from tests.support.functions_stack import FunctionsStack, stack  # noqa: F401
from tests.support.host_process import TEST_HMAC_KEY

PASSWORD = "correct-horse-battery-staple-9"
CPI = "US-CPI-2026-12"
SENATE = "US-SENATE-2026"
SETTLE_MAX = 100


class SteppingClock:
    """The auth clock; each admin action steps it 30 s so every TOTP code is a fresh one."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


@dataclass
class Session:
    user_id: str
    token: str
    totp_secret: str | None = None


class Journey:
    def __init__(self, stack: FunctionsStack) -> None:
        self.stack = stack
        self.client: TestClient = stack.client
        self.clock = SteppingClock(1_900_000_000.0)
        app: Any = self.client.app
        # Default starting balance (funded through the host); the per-IP login bucket is widened
        # because every call here comes from the one TestClient address.
        app.state.auth_config = AuthConfig(rate_capacity=1000, clock_s=self.clock)
        self.resources = app.state.resources

    def login(self, username: str) -> str:
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def register(self, username: str) -> Session:
        response = self.client.post(
            "/api/v1/auth/register", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["role"] == "editor" and body["balance_minor"] == STARTING_BALANCE_MINOR
        return Session(body["user_id"], self.login(username))

    def admin(self, username: str, role: str) -> Session:
        principal, secret = create_user(self.resources, username, PASSWORD, role, with_totp=True)  # type: ignore[arg-type]
        return Session(principal.user_id, self.login(username), secret)

    def headers(self, who: Session) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {who.token}"}
        if who.totp_secret is not None:
            self.clock.now_s += 30
            headers["X-TOTP"] = pyotp.TOTP(who.totp_secret).at(self.clock.now_s)
        return headers

    def get(self, path: str, who: Session | None = None, **params: Any) -> dict[str, Any]:
        response = self.client.get(path, params=params, headers=self.headers(who) if who else None)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def post(self, path: str, who: Session, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        response = self.client.post(path, json=body, headers=self.headers(who))
        assert response.status_code == status, response.text
        out: dict[str, Any] = response.json()
        return out

    def act(
        self, admin: Session, action: str, target: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"action": action, "target": target, "params": params or {}, "reason": f"e2e: {action}"}
        return self.post("/api/v1/admin/action", admin, body)

    def order(self, who: Session, side: str, price: int, quantity: int, ref: str) -> dict[str, Any]:
        body = {
            "symbol": CPI,
            "side": side,
            "type": "limit",
            "price": price,
            "quantity": quantity,
            "client_order_id": ref,
        }
        return self.post("/api/v1/order", who, body)

    def project(self) -> int:
        source = HostEventSource(self.stack.host.url, TEST_HMAC_KEY)
        try:
            with psycopg.connect(self.stack.settings.database_url, autocommit=True) as conn:
                return Projector(conn, source).catch_up()
        finally:
            source.close()


def market_request(symbol: str, title: str, market_type: str, criteria: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "title": title,
        "description": f"{title} Resolution per the sources.",
        "type": market_type,
        "subtype": "e2e",
        "region": "US",
        "kind": "binary",
        "sources": ["https://www.bls.gov/cpi/"],
        "resolution_criteria": criteria,
    }


def subscribe(ws: ClientConnection, channel: str) -> int:
    """Join `channel`; return its sequence number at the time of joining."""
    ws.send(json.dumps({"op": "subscribe", "channels": [channel]}))
    reply = json.loads(ws.recv(timeout=5))
    assert (reply["op"], reply["channels"], reply["rejected"]) == ("subscribed", [channel], []), reply
    joined_at: int = reply["last_sequence"][channel]
    return joined_at


def envelopes_until(ws: ClientConnection, last_sequence: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while not out or out[-1]["sequence_number"] < last_sequence:
        out.append(json.loads(ws.recv(timeout=10)))
    return out


def test_two_users_trade_a_market_from_request_to_settlement(stack: FunctionsStack) -> None:
    j = Journey(stack)
    alice, bob = j.register("alice"), j.register("bob")
    first_admin = j.admin("admin-one", "admin")
    second_admin = j.admin("admin-two", "super_admin")

    # --- requests: any user; both wait for an admin
    cpi = j.post(
        "/api/v1/market-requests",
        alice,
        market_request(
            CPI,
            "Will US CPI inflation exceed 3% in December 2026?",
            "economic",
            "Resolves YES if the BLS December 2026 CPI-U YoY figure is above 3.0%.",
        ),
    )
    assert cpi["status"] == "requested" and cpi["created_by"] == alice.user_id
    senate = j.post(
        "/api/v1/market-requests",
        bob,
        market_request(
            SENATE,
            "Will party X hold the US Senate after the 2026 elections?",
            "political",
            "Resolves YES if party X holds 51 or more seats on 3 January 2027.",
        ),
    )
    assert senate["approval"]["required"] == 2

    # --- approvals: one admin for CPI; the political market needs two different admins
    approved = j.act(first_admin, "approve_market", CPI, {"risk_level": "low"})
    assert approved["status"] == "approved" and approved["market_status"] == "approved"
    pending = j.act(first_admin, "approve_market", SENATE, {"risk_level": "high"})
    assert pending["status"] == "pending_second_approval" and pending["market_status"] == "requested"
    refused = j.client.post(
        "/api/v1/admin/action",
        json={
            "action": "approve_market",
            "target": SENATE,
            "params": {"risk_level": "high"},
            "reason": "again",
        },
        headers=j.headers(first_admin),
    )
    assert refused.status_code == 409 and refused.json()["code"] == "same_admin"
    second = j.act(second_admin, "approve_market", SENATE, {"risk_level": "high"})
    assert second["status"] == "approved" and (second["approvals"], second["approvals_required"]) == (2, 2)
    # A trader cannot act as an admin (no admin role: refused before any TOTP check).
    viewer_try = j.client.post(
        "/api/v1/admin/action",
        json={"action": "open_market", "target": CPI, "params": {}, "reason": "let me in"},
        headers={"Authorization": f"Bearer {alice.token}", "X-TOTP": "123456"},
    )
    assert viewer_try.status_code == 403 and viewer_try.json()["code"] == "forbidden"

    # Approved markets exist on the host, halted, until an admin opens them.
    early = j.client.post(
        "/api/v1/order",
        json={"symbol": CPI, "side": "buy", "price": 50, "quantity": 1},
        headers=j.headers(alice),
    )
    assert early.status_code == 409 and early.json()["code"] == "market_not_open"

    with connect(stack.host.ws_url, open_timeout=5) as ws:
        joined_at = subscribe(ws, f"market:{CPI}")
        assert j.act(first_admin, "open_market", CPI)["status"] == "open"
        assert j.act(second_admin, "open_market", SENATE)["status"] == "open"

        detail = j.get(f"/api/v1/markets/{SENATE}")
        assert detail["status"] == "open" and detail["risk_level"] == "high"
        assert detail["human_approval_audit_id"] == second["audit_event_id"]
        assert {a["admin_id"] for a in detail["approval"]["approvals"]} == {
            first_admin.user_id,
            second_admin.user_id,
        }
        found = j.get("/api/v1/search", q="inflation")
        assert [m["symbol"] for m in found["items"]] == [CPI]

        # --- trading: bob sells short, alice buys; each pair crosses
        rest = j.order(bob, "sell", 60, 10, "bob-1")
        assert rest["status"] == "open" and rest["fills"] == []
        take = j.order(alice, "buy", 60, 10, "alice-1")
        assert take["status"] == "filled" and take["filled_quantity"] == 10
        assert [(f["price"], f["quantity"], f["liquidity"]) for f in take["fills"]] == [(60, 10, "taker")]
        assert j.order(alice, "buy", 55, 5, "alice-2")["status"] == "open"
        hit = j.order(bob, "sell", 55, 5, "bob-2")
        assert hit["status"] == "filled" and hit["fills"][0]["liquidity"] == "taker"
        # The same client_order_id again returns the first order, never a second one.
        again = j.order(bob, "sell", 55, 5, "bob-2")
        assert again["duplicate"] is True and again["server_order_id"] == hit["server_order_id"]

        snapshot = j.get(f"/api/v1/market/{CPI}/snapshot")
        assert snapshot["bids"] == [] and snapshot["asks"] == [] and snapshot["last_trade"]["price"] == 55
        # The channel's envelopes rose by exactly 1 from where this client joined.
        seen = envelopes_until(ws, snapshot["last_sequence"])
    sequence = [e["sequence_number"] for e in seen]
    assert sequence == list(range(joined_at + 1, snapshot["last_sequence"] + 1))
    assert all(e["channel"] == f"market:{CPI}" and e["source_of_truth"] == "orderbook_service" for e in seen)
    kinds = [e["payload"]["type"] for e in seen]
    assert kinds[0] == "market_status" and kinds.count("trade") == 2
    assert {"book", "order_accepted"} <= set(kinds)

    # --- positions and cash, from the host, exactly as the money model says
    alice_cash = STARTING_BALANCE_MINOR - 10 * 60 - 5 * 55
    bob_cash = STARTING_BALANCE_MINOR - 10 * (SETTLE_MAX - 60) - 5 * (SETTLE_MAX - 55)
    alice_pos = j.get("/api/v1/positions", alice)
    assert (alice_pos["cash_minor"], alice_pos["reserved_minor"]) == (alice_cash, 0)
    assert [(p["symbol"], p["position"], p["long"], p["short"]) for p in alice_pos["positions"]] == [
        (CPI, 15, 15, 0)
    ]
    bob_pos = j.get("/api/v1/positions", bob)
    assert bob_pos["cash_minor"] + bob_pos["reserved_minor"] == bob_cash
    assert [(p["symbol"], p["position"], p["long"], p["short"]) for p in bob_pos["positions"]] == [
        (CPI, -15, 0, 15)
    ]
    alice_worth = alice_cash + 15 * 55
    bob_worth = bob_cash + 15 * (SETTLE_MAX - 55)
    assert alice_worth + bob_worth == 2 * STARTING_BALANCE_MINOR
    pnl = j.get("/api/v1/pnl", alice)
    assert pnl["net_worth_minor"] == alice_worth and pnl["pnl_minor"] == alice_worth - STARTING_BALANCE_MINOR

    # --- the read model (after the projector caught up): tape, candles, fills, leaderboard
    assert j.project() > 0
    tape = j.get(f"/api/v1/market/{CPI}/trades")
    assert [(t["price"], t["quantity"], t["taker_side"]) for t in tape["items"]] == [
        (55, 5, "sell"),
        (60, 10, "buy"),
    ]
    for interval in ("1m", "1h", "1d"):
        bars = j.get(f"/api/v1/market/{CPI}/candles", interval=interval)["items"]
        # Two trades may straddle a bucket boundary, so check what holds either way.
        assert bars and bars[0]["open"] == 60 and bars[-1]["close"] == 55, (interval, bars)
        assert max(b["high"] for b in bars) == 60 and min(b["low"] for b in bars) == 55
        assert sum(b["volume"] for b in bars) == 15 and sum(b["trade_count"] for b in bars) == 2
    fills = j.get("/api/v1/fills", alice)["items"]
    assert [(f["side"], f["price"], f["quantity"], f["liquidity"]) for f in fills] == [
        ("buy", 55, 5, "maker"),
        ("buy", 60, 10, "taker"),
    ]
    board = j.get("/api/v1/leaderboard")
    assert [(e["rank"], e["account"], e["net_worth_minor"]) for e in board["items"]] == [
        (1, bob.user_id, bob_worth),
        (2, alice.user_id, alice_worth),
    ]

    # --- close, resolve YES at 100: each long contract pays 100, the short's collateral covers it
    assert j.act(first_admin, "close_market", CPI)["status"] == "closed"
    resolved = j.act(second_admin, "resolve_market", CPI, {"settlement_price": SETTLE_MAX})
    assert resolved["status"] == "settled"
    alice_final = j.get("/api/v1/positions", alice)
    bob_final = j.get("/api/v1/positions", bob)
    assert (alice_final["cash_minor"], alice_final["reserved_minor"], alice_final["positions"]) == (
        alice_cash + 15 * SETTLE_MAX,
        0,
        [],
    )
    assert (bob_final["cash_minor"], bob_final["reserved_minor"], bob_final["positions"]) == (bob_cash, 0, [])
    assert alice_final["cash_minor"] + bob_final["cash_minor"] == 2 * STARTING_BALANCE_MINOR
    assert j.get(f"/api/v1/markets/{CPI}")["settlement_price"] == SETTLE_MAX

    j.project()
    board = j.get("/api/v1/leaderboard")
    assert [(e["account"], e["net_worth_minor"]) for e in board["items"]] == [
        (alice.user_id, alice_cash + 15 * SETTLE_MAX),
        (bob.user_id, bob_cash),
    ]

    # --- one audit event per admin decision (3 approvals, 2 opens, close, resolve); chain intact
    report = j.get("/api/v1/admin/audit/verify", first_admin)
    assert report["ok"] is True and report["events"] == 7, report
    with psycopg.connect(stack.settings.database_url) as conn:
        rows = conn.execute("SELECT action, actor FROM audit_events ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [
        "approve_market",
        "approve_market",
        "approve_market",
        "open_market",
        "open_market",
        "close_market",
        "resolve_market",
    ]
    assert {r[1] for r in rows} == {first_admin.user_id, second_admin.user_id}
