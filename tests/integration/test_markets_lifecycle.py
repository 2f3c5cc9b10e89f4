# ruff: noqa: F811  (the `stack` fixture is imported, then named by each test)
"""Market requests and the admin lifecycle against real PostgreSQL and a real orderbook host.

request → approve (TOTP) → open → halt → open → close → resolve → settled, with the host's
own view checked at each step, two different admins for political markets, the timeline,
duplicate flagging, bad inputs that write nothing, and the audit log verifying at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pyotp
from fastapi.testclient import TestClient

from functions.auth import AuthConfig, create_user
from tests.support.functions_stack import FunctionsStack, stack  # noqa: F401

PASSWORD = "correct horse battery"


class SteppingClock:
    """The auth clock: each TOTP code is taken one 30 s step later, so codes are fresh."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


@dataclass
class Actor:
    user_id: str
    token: str
    totp_secret: str | None = None


class World:
    """Users, admins and helpers on one stack."""

    def __init__(self, stack: FunctionsStack) -> None:
        self.stack = stack
        self.client: TestClient = stack.client
        self.clock = SteppingClock(1_900_000_000.0)
        app: Any = self.client.app
        app.state.auth_config = AuthConfig(starting_balance_minor=0, rate_capacity=1000, clock_s=self.clock)
        self.resources = app.state.resources

    def login(self, username: str) -> str:
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def user(self, username: str, role: str = "editor") -> Actor:
        principal, _ = create_user(self.resources, username, PASSWORD, role)  # type: ignore[arg-type]
        return Actor(principal.user_id, self.login(username))

    def admin(self, username: str, role: str = "admin") -> Actor:
        principal, secret = create_user(self.resources, username, PASSWORD, role, with_totp=True)  # type: ignore[arg-type]
        return Actor(principal.user_id, self.login(username), secret)

    def totp(self, actor: Actor) -> str:
        assert actor.totp_secret is not None
        self.clock.now_s += 30
        return pyotp.TOTP(actor.totp_secret).at(self.clock.now_s)

    def headers(self, actor: Actor, *, totp: bool = True) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {actor.token}"}
        if totp and actor.totp_secret is not None:
            headers["X-TOTP"] = self.totp(actor)
        return headers

    def request_market(self, actor: Actor, **fields: Any) -> httpx.Response:
        response: httpx.Response = self.client.post(
            "/api/v1/market-requests", json=market_request(**fields), headers=self.headers(actor)
        )
        return response

    def act(
        self,
        admin: Actor,
        action: str,
        target: str,
        params: dict[str, Any] | None = None,
        reason: str = "checked",
    ) -> httpx.Response:
        body = {"action": action, "target": target, "params": params or {}, "reason": reason}
        response: httpx.Response = self.client.post(
            "/api/v1/admin/action", json=body, headers=self.headers(admin)
        )
        return response

    def detail(self, symbol: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/markets/{symbol}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def host_market(self, symbol: str) -> dict[str, Any] | None:
        with self.stack.host.client() as host:
            response = host.get("/snapshot", params={"symbol": symbol})
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        market: dict[str, Any] = response.json()["market"]
        return market

    def verify_audit(self, admin: Actor) -> dict[str, Any]:
        response = self.client.get("/api/v1/admin/audit/verify", headers=self.headers(admin))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def counts(self) -> tuple[int, int, int, int]:
        with psycopg.connect(self.stack.settings.database_url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM markets), (SELECT count(*) FROM market_events),"
                " (SELECT count(*) FROM market_approvals), (SELECT count(*) FROM audit_events)"
            ).fetchone()
        assert row is not None
        return row[0], row[1], row[2], row[3]


def market_request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": "US-CPI-2026-12",
        "title": "Will US CPI inflation exceed 3% in December 2026?",
        "description": "Year-on-year CPI-U as published by the BLS.",
        "type": "economic",
        "subtype": "inflation",
        "region": "US",
        "kind": "binary",
        "sources": ["https://www.bls.gov/cpi/"],
        "resolution_criteria": "Resolves YES if the BLS December 2026 CPI-U YoY figure is above 3.0%.",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def order(account: str, side: str) -> dict[str, Any]:
    return {"account": account, "symbol": "US-CPI-2026-12", "side": side, "price": 60, "quantity": 10}


def test_binary_market_full_lifecycle(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    admin = world.admin("root")

    created = world.request_market(alice)
    assert created.status_code == 201, created.text
    market = created.json()
    assert market["status"] == "requested" and market["created_by"] == alice.user_id
    assert (market["tick_size"], market["price_min"], market["price_max"]) == (1, 1, 99)
    assert market["risk_level"] is None and market["human_approval_audit_id"] is None
    assert market["approval"] == {"required": 1, "count": 0, "approvals": []}
    assert market["possible_duplicate_of"] == []
    assert world.host_market("US-CPI-2026-12") is None

    approved = world.act(admin, "approve_market", "US-CPI-2026-12", {"risk_level": "low"}, "clear source")
    assert approved.status_code == 201, approved.text
    result = approved.json()
    assert result["status"] == "approved" and result["approvals"] == 1 and result["converged"] is False
    host = world.host_market("US-CPI-2026-12")
    assert host is not None and host["status"] == "halted" and host["kind"] == "binary"
    detail = world.detail("US-CPI-2026-12")
    assert detail["human_approval_audit_id"] == result["audit_event_id"]
    assert detail["risk_level"] == "low" and detail["approval"]["count"] == 1

    def step(action: str, status: str) -> None:
        response = world.act(admin, action, "US-CPI-2026-12")
        assert response.status_code == 201, response.text
        assert response.json()["status"] == status
        host = world.host_market("US-CPI-2026-12")
        assert host is not None and host["status"] == status
        assert world.detail("US-CPI-2026-12")["status"] == status

    # Halted right after approval: the host refuses orders until an admin opens the market.
    with stack.host.client() as host_client:
        for account in ("buyer-1", "seller-1"):
            assert (
                host_client.post(f"/accounts/{account}/deposit", json={"amount_minor": 10_000}).status_code
                == 200
            )
        early = host_client.post("/order", json=order("buyer-1", "buy"))
        assert early.status_code == 409 and early.json()["code"] == "market_not_open"
    step("open_market", "open")
    step("halt_market", "halted")
    step("open_market", "open")
    with stack.host.client() as host_client:
        assert host_client.post("/order", json=order("seller-1", "sell")).status_code == 201
        assert host_client.post("/order", json=order("buyer-1", "buy")).status_code == 201
    step("close_market", "closed")

    resolved = world.act(
        admin, "resolve_market", "US-CPI-2026-12", {"settlement_price": 100}, "BLS published 3.4%"
    )
    assert resolved.status_code == 201, resolved.text
    assert resolved.json()["status"] == "settled"
    host = world.host_market("US-CPI-2026-12")
    assert host is not None and host["status"] == "settled" and host["settlement_price"] == 100
    # Resolution paid out through the host: the YES holder gets 100 per contract.
    with stack.host.client() as host_client:
        buyer = host_client.get("/accounts/buyer-1").json()
        seller = host_client.get("/accounts/seller-1").json()
    assert buyer["cash_minor"] == 10_000 - 10 * 60 + 10 * 100 and buyer["positions"] == {}
    assert seller["cash_minor"] + buyer["cash_minor"] == 20_000

    detail = world.detail("US-CPI-2026-12")
    assert detail["status"] == "settled" and detail["settlement_price"] == 100
    events = [(e["event"], e["from_status"], e["to_status"]) for e in detail["timeline"]]
    assert events == [
        ("requested", None, "requested"),
        ("approved", "requested", "approved"),
        ("opened", "approved", "open"),
        ("halted", "open", "halted"),
        ("opened", "halted", "open"),
        ("closed", "open", "closed"),
        ("resolved", "closed", "resolved"),
        ("settled", "resolved", "settled"),
    ]
    assert all(e["actor"] == admin.user_id and e["audit_event_id"] for e in detail["timeline"][1:])
    assert detail["timeline"][-1]["reason"] == "BLS published 3.4%"

    # Every decision is one audit event, and the chain verifies through the admin session.
    report = world.verify_audit(admin)
    assert report["ok"] is True and report["events"] == 6
    event = world.resources.audit_log().get(result["audit_event_id"])
    assert (
        event.actor == admin.user_id and event.action == "approve_market" and event.target == "US-CPI-2026-12"
    )
    assert event.payload["reason"] == "clear source" and event.payload["params"] == {"risk_level": "low"}

    # Settled is final.
    again = world.act(admin, "open_market", "US-CPI-2026-12")
    assert again.status_code == 409 and again.json()["code"] == "invalid_status_transition"


def test_political_market_needs_two_different_admins(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    first, second = world.admin("admin-one"), world.admin("admin-two", "super_admin")
    body = {
        "symbol": "US-SENATE-2026",
        "title": "Will party X hold the US Senate after 2026?",
        "type": "political",
    }
    assert world.request_market(alice, **body).status_code == 201

    one = world.act(first, "approve_market", "US-SENATE-2026", {"risk_level": "high"})
    assert one.status_code == 201, one.text
    assert one.json()["status"] == "pending_second_approval"
    assert one.json()["market_status"] == "requested"
    assert (one.json()["approvals"], one.json()["approvals_required"]) == (1, 2)
    assert world.host_market("US-SENATE-2026") is None
    detail = world.detail("US-SENATE-2026")
    assert detail["status"] == "requested" and detail["approval"]["count"] == 1
    assert detail["timeline"][-1]["event"] == "approval_recorded"

    # The same admin again (with a fresh TOTP code) is refused, and nothing is written.
    before = world.counts()
    same = world.act(first, "approve_market", "US-SENATE-2026", {"risk_level": "high"})
    assert same.status_code == 409 and same.json()["code"] == "same_admin"
    assert world.counts() == before

    # The second admin must agree on the risk level.
    mismatch = world.act(second, "approve_market", "US-SENATE-2026", {"risk_level": "low"})
    assert mismatch.status_code == 409 and mismatch.json()["code"] == "approval_mismatch"
    assert world.counts() == before

    two = world.act(second, "approve_market", "US-SENATE-2026", {"risk_level": "high"})
    assert two.status_code == 201, two.text
    assert two.json()["status"] == "approved" and two.json()["approvals"] == 2
    host = world.host_market("US-SENATE-2026")
    assert host is not None and host["status"] == "halted"
    detail = world.detail("US-SENATE-2026")
    assert detail["human_approval_audit_id"] == two.json()["audit_event_id"]
    assert {a["admin_id"] for a in detail["approval"]["approvals"]} == {first.user_id, second.user_id}
    assert world.verify_audit(second)["ok"] is True


def test_scalar_market_with_grid_override_and_reject(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    admin = world.admin("root")
    scalar = {
        "symbol": "BTC-INDEX",
        "title": "Bitcoin price index",
        "type": "finance",
        "kind": "scalar",
        "tick_size": 5,
        "price_min": 0,
        "price_max": 100_000,
    }
    assert world.request_market(alice, **scalar).status_code == 201
    # An override whose grid is off (100000 - 10 is not a multiple of 7) is refused.
    bad = world.act(
        admin, "approve_market", "BTC-INDEX", {"risk_level": "medium", "tick_size": 7, "price_min": 10}
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_bounds"
    ok = world.act(admin, "approve_market", "BTC-INDEX", {"risk_level": "medium", "tick_size": 10})
    assert ok.status_code == 201, ok.text
    host = world.host_market("BTC-INDEX")
    assert host is not None and (host["kind"], host["tick_size"], host["price_min"], host["price_max"]) == (
        "scalar",
        10,
        0,
        100_000,
    )
    assert world.detail("BTC-INDEX")["tick_size"] == 10
    assert world.act(admin, "open_market", "BTC-INDEX").status_code == 201
    assert world.act(admin, "close_market", "BTC-INDEX").status_code == 201
    off_grid = world.act(admin, "resolve_market", "BTC-INDEX", {"settlement_price": 12_345})
    assert off_grid.status_code == 422 and off_grid.json()["code"] == "invalid_settlement_price"
    settled = world.act(admin, "resolve_market", "BTC-INDEX", {"settlement_price": 12_340})
    assert settled.status_code == 201, settled.text

    # Reject: only from requested; the host never hears of the market.
    assert world.request_market(alice, symbol="ETH-INDEX", title="Ether price index").status_code == 201
    rejected = world.act(admin, "reject_market", "ETH-INDEX", reason="duplicate of an existing index")
    assert rejected.status_code == 201 and rejected.json()["status"] == "rejected"
    assert world.host_market("ETH-INDEX") is None
    assert world.detail("ETH-INDEX")["timeline"][-1]["event"] == "rejected"
    again = world.act(admin, "approve_market", "ETH-INDEX", {"risk_level": "low"})
    assert again.status_code == 409 and again.json()["code"] == "invalid_status_transition"
    # A rejected symbol is not reused.
    reuse = world.request_market(alice, symbol="ETH-INDEX", title="Something else entirely")
    assert reuse.status_code == 409 and reuse.json()["code"] == "market_exists"


def test_retry_after_a_lost_commit_converges(stack: FunctionsStack) -> None:
    """The host applied a change whose DB commit was lost: the admin's retry succeeds."""
    world = World(stack)
    alice = world.user("alice")
    admin = world.admin("root")
    assert (
        world.request_market(alice, symbol="LOST-1", title="A market whose commit is lost").status_code == 201
    )
    # Simulate the lost commits: the host already has the market (halted), then open.
    with stack.host.client() as host:
        created = host.post("/markets", json={"symbol": "LOST-1", "kind": "binary", "status": "halted"})
        assert created.status_code == 201, created.text
    approved = world.act(admin, "approve_market", "LOST-1", {"risk_level": "low"})
    assert approved.status_code == 201, approved.text
    assert approved.json()["converged"] is True and approved.json()["status"] == "approved"
    with stack.host.client() as host:
        assert host.post("/markets/LOST-1/status", json={"status": "open"}).status_code == 200
    opened = world.act(admin, "open_market", "LOST-1")
    assert opened.status_code == 201 and opened.json()["converged"] is True
    # A host state that is NOT what the action asks for is passed through, nothing written.
    with stack.host.client() as host:
        assert host.post("/markets/LOST-1/status", json={"status": "closed"}).status_code == 200
    before = world.counts()
    halted = world.act(admin, "halt_market", "LOST-1")
    assert halted.status_code == 409 and halted.json()["code"] == "invalid_status_transition"
    assert world.counts() == before and world.detail("LOST-1")["status"] == "open"
    assert world.verify_audit(admin)["ok"] is True


def test_duplicate_requests_are_flagged_or_refused(stack: FunctionsStack) -> None:
    world = World(stack)
    alice, bob = world.user("alice"), world.user("bob")
    assert world.request_market(alice).status_code == 201

    same_symbol = world.request_market(bob, title="Something unrelated to anything")
    assert same_symbol.status_code == 409 and same_symbol.json()["code"] == "market_exists"

    reworded = world.request_market(
        bob, symbol="CPI-DEC-26", title="will US CPI inflation exceed 3% in december 2026"
    )
    assert reworded.status_code == 201, reworded.text
    assert reworded.json()["possible_duplicate_of"] == ["US-CPI-2026-12"]

    overlapping = world.request_market(
        bob, symbol="CPI-DEC-26-B", title="US CPI inflation exceeds 3% in December 2026"
    )
    assert overlapping.status_code == 201
    assert overlapping.json()["possible_duplicate_of"] == ["US-CPI-2026-12", "CPI-DEC-26"]

    unrelated = world.request_market(
        bob, symbol="WORLD-CUP-2026", title="Will Brazil win the 2026 World Cup?"
    )
    assert unrelated.status_code == 201 and unrelated.json()["possible_duplicate_of"] == []

    listed = world.client.get("/api/v1/markets", params={"status": "requested", "limit": 2})
    assert listed.status_code == 200
    page = listed.json()
    assert [m["symbol"] for m in page["items"]] == ["WORLD-CUP-2026", "CPI-DEC-26-B"]
    rest = world.client.get(
        "/api/v1/markets", params={"status": "requested", "cursor": page["next_cursor"]}
    ).json()
    assert [m["symbol"] for m in rest["items"]] == ["CPI-DEC-26", "US-CPI-2026-12"] and rest[
        "next_cursor"
    ] is None


BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"symbol": "lower-case"}, 422, "validation_error"),
    ({"symbol": "-LEADING"}, 422, "validation_error"),
    ({"symbol": "A" * 33}, 422, "validation_error"),
    ({"symbol": 12}, 422, "validation_error"),
    ({"title": "ab"}, 422, "validation_error"),
    ({"title": "x" * 201}, 422, "validation_error"),
    ({"title": "line\nbreak"}, 422, "validation_error"),
    ({"description": "d" * 5001}, 422, "validation_error"),
    ({"type": "weather"}, 422, "invalid_enum"),
    ({"kind": "ternary"}, 422, "invalid_enum"),
    ({"subtype": "s" * 65}, 422, "validation_error"),
    ({"region": "r" * 65}, 422, "validation_error"),
    ({"sources": []}, 422, "validation_error"),
    ({"sources": ["ftp://example.com/x"]}, 422, "validation_error"),
    ({"sources": ["https://example.com/"] * 11}, 422, "validation_error"),
    ({"sources": "https://example.com/"}, 422, "validation_error"),
    ({"resolution_criteria": "short"}, 422, "validation_error"),
    ({"resolution_criteria": None}, 422, "missing_field"),
    ({"risk_level": "low"}, 422, "unknown_field"),
    ({"status": "open"}, 422, "unknown_field"),
    ({"tick_size": 2}, 422, "invalid_bounds"),
    ({"price_max": 100}, 422, "invalid_bounds"),
    ({"kind": "scalar"}, 422, "invalid_bounds"),
    ({"kind": "scalar", "tick_size": 3, "price_min": 0, "price_max": 100}, 422, "invalid_bounds"),
    ({"kind": "scalar", "tick_size": 1, "price_min": 10, "price_max": 10}, 422, "invalid_bounds"),
    ({"kind": "scalar", "tick_size": 1, "price_min": 0, "price_max": 10**10}, 422, "validation_error"),
    ({"kind": "scalar", "tick_size": 1.0, "price_min": 0, "price_max": 10}, 422, "validation_error"),
    ({"kind": "scalar", "tick_size": "1", "price_min": 0, "price_max": 10}, 422, "validation_error"),
    ({"kind": "scalar", "tick_size": 1, "price_min": -1, "price_max": 10}, 422, "validation_error"),
]


def test_bad_requests_are_refused_with_a_code_and_write_nothing(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    viewer = world.user("watcher", "viewer")
    before = world.counts()
    for fields, status, code in BAD_REQUESTS:
        response = world.request_market(alice, **fields)
        assert (response.status_code, response.json().get("code")) == (status, code), (fields, response.text)
    headers = world.headers(alice)
    raw = world.client.post(
        "/api/v1/market-requests",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["code"] == "malformed_json"
    big = world.client.post(
        "/api/v1/market-requests", json=market_request(description="d" * 11_000_000), headers=headers
    )
    assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
    anonymous = world.client.post("/api/v1/market-requests", json=market_request())
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    read_only = world.request_market(viewer)
    assert read_only.status_code == 403 and read_only.json()["code"] == "forbidden"
    assert world.counts() == before

    missing = world.client.get("/api/v1/markets/NOPE")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_market"
    bad_symbol = world.client.get("/api/v1/markets/no_pe")
    assert bad_symbol.status_code == 422
    bad_cursor = world.client.get("/api/v1/markets", params={"cursor": "!!!"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["code"] == "invalid_cursor"
    bad_status = world.client.get("/api/v1/markets", params={"status": "flying"})
    assert bad_status.status_code == 422 and bad_status.json()["code"] == "invalid_enum"


def test_pending_request_cap(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    titles = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    for n in range(20):
        title = f"{titles[n % 10]} {titles[(n * 3 + 1) % 10]} market number {n}"
        response = world.request_market(alice, symbol=f"CAP-{n}", title=title)
        assert response.status_code == 201, response.text
    over = world.request_market(alice, symbol="CAP-20", title="one too many for now")
    assert over.status_code == 409 and over.json()["code"] == "too_many_pending_requests"
