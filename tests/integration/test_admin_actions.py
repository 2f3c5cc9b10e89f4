# ruff: noqa: F811  (the `stack` fixture is imported, then named by each test)
"""Admin actions refuse what they must: no or wrong second factor, too low a role, bad
bodies, unknown markets, transitions the lifecycle forbids. Each refusal has its code and
writes nothing (no market change, no timeline row, no approval, no audit event, no host call).
"""

from __future__ import annotations

import threading
from typing import Any

import pyotp

from tests.integration.test_markets_lifecycle import World
from tests.support.functions_stack import FunctionsStack, stack  # noqa: F401

ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("approve_market", {"risk_level": "low"}),
    ("reject_market", {}),
    ("open_market", {}),
    ("halt_market", {}),
    ("close_market", {}),
    ("resolve_market", {"settlement_price": 100}),
]


def test_every_action_needs_an_admin_with_a_fresh_second_factor(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    viewer = world.user("viewer-1", "viewer")
    admin = world.admin("root")
    unenrolled = world.user("admin-no-totp", "admin")
    assert world.request_market(alice).status_code == 201
    before = world.counts()

    def post(headers: dict[str, str], action: str, params: dict[str, Any]) -> tuple[int, str]:
        body = {"action": action, "target": "US-CPI-2026-12", "params": params, "reason": "testing refusals"}
        response = world.client.post("/api/v1/admin/action", json=body, headers=headers)
        return response.status_code, response.json().get("code", "")

    bearer = {"Authorization": f"Bearer {admin.token}"}
    for action, params in ACTIONS:
        assert post({}, action, params) == (401, "not_authenticated"), action
        assert post({"Authorization": "Bearer not-a-jwt"}, action, params) == (401, "invalid_token"), action
        assert post(world.headers(alice), action, params) == (403, "forbidden"), action
        assert post({**world.headers(viewer), "X-TOTP": "123456"}, action, params) == (403, "forbidden"), (
            action
        )
        assert post(world.headers(unenrolled), action, params) == (403, "totp_not_enrolled"), action
        assert post(bearer, action, params) == (401, "totp_required"), action
        assert post({**bearer, "X-TOTP": "abc"}, action, params) == (401, "totp_invalid"), action
        # A code from far away in time (another step than the current window).
        assert admin.totp_secret is not None
        stale = pyotp.TOTP(admin.totp_secret).at(world.clock.now_s - 3600)
        assert post({**bearer, "X-TOTP": stale}, action, params) == (401, "totp_invalid"), action
    assert world.counts() == before
    assert world.host_market("US-CPI-2026-12") is None

    # A code is accepted once: replaying it, even for the same request, is refused.
    code = world.totp(admin)
    ok = post({**bearer, "X-TOTP": code}, "approve_market", {"risk_level": "low"})
    assert ok == (201, "")
    assert post({**bearer, "X-TOTP": code}, "open_market", {}) == (401, "totp_invalid")
    assert world.detail("US-CPI-2026-12")["status"] == "approved"

    # The audit check: admin session with TOTP, or a signed service call; not an editor.
    assert world.verify_audit(admin)["events"] == 1
    refused = world.client.get("/api/v1/admin/audit/verify", headers=world.headers(alice))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    no_code = world.client.get("/api/v1/admin/audit/verify", headers=bearer)
    assert no_code.status_code == 401 and no_code.json()["code"] == "totp_required"
    unsigned = world.client.get("/api/v1/admin/audit/verify")
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "signature_missing"


BAD_BODIES: list[tuple[dict[str, Any], int, str]] = [
    ({"reason": None}, 422, "missing_field"),
    ({"reason": "no"}, 422, "validation_error"),
    ({"reason": "   no   "}, 422, "validation_error"),
    ({"reason": "r" * 501}, 422, "validation_error"),
    ({"reason": 12345}, 422, "validation_error"),
    ({"action": "delete_market"}, 422, "invalid_enum"),
    ({"action": None}, 422, "missing_field"),
    ({"target": None}, 422, "missing_field"),
    ({"target": ""}, 422, "validation_error"),
    ({"extra": 1}, 422, "unknown_field"),
    ({"params": []}, 422, "validation_error"),
    ({"params": {}}, 422, "missing_field"),
    ({"params": {"risk_level": "extreme"}}, 422, "invalid_enum"),
    ({"params": {"risk_level": "low", "colour": "red"}}, 422, "unknown_field"),
    ({"params": {"risk_level": "low", "tick_size": 2}}, 422, "invalid_bounds"),
    ({"params": {"risk_level": "low", "tick_size": 1.5}}, 422, "validation_error"),
    ({"target": "NOPE"}, 404, "unknown_market"),
    ({"target": "not a symbol"}, 404, "unknown_market"),
    ({"action": "open_market", "params": {}}, 409, "invalid_status_transition"),
    ({"action": "halt_market", "params": {}}, 409, "invalid_status_transition"),
    ({"action": "close_market", "params": {}}, 409, "invalid_status_transition"),
    ({"action": "resolve_market", "params": {"settlement_price": 100}}, 409, "invalid_status_transition"),
    ({"action": "open_market", "params": {"now": True}}, 422, "unknown_field"),
    ({"action": "resolve_market", "params": {}}, 422, "missing_field"),
    ({"action": "resolve_market", "params": {"settlement_price": "100"}}, 422, "validation_error"),
    ({"action": "resolve_market", "params": {"settlement_price": -1}}, 422, "validation_error"),
]


def test_bad_bodies_and_forbidden_transitions_write_nothing(stack: FunctionsStack) -> None:
    world = World(stack)
    alice = world.user("alice")
    admin = world.admin("root")
    assert world.request_market(alice).status_code == 201
    before = world.counts()
    for fields, status, code in BAD_BODIES:
        body: dict[str, Any] = {
            "action": "approve_market",
            "target": "US-CPI-2026-12",
            "params": {"risk_level": "low"},
            "reason": "a good reason",
        }
        body.update(fields)
        body = {k: v for k, v in body.items() if v is not None}
        response = world.client.post("/api/v1/admin/action", json=body, headers=world.headers(admin))
        assert (response.status_code, response.json().get("code")) == (status, code), (fields, response.text)
    assert world.counts() == before
    assert world.host_market("US-CPI-2026-12") is None

    # Once approved and open: a binary market settles only at 0 or 100, and only once closed.
    assert world.act(admin, "approve_market", "US-CPI-2026-12", {"risk_level": "low"}).status_code == 201
    assert world.act(admin, "open_market", "US-CPI-2026-12").status_code == 201
    before = world.counts()
    late: list[tuple[str, dict[str, Any], int, str]] = [
        ("reject_market", {}, 409, "invalid_status_transition"),
        ("approve_market", {"risk_level": "low"}, 409, "invalid_status_transition"),
        ("open_market", {}, 409, "invalid_status_transition"),
        ("resolve_market", {"settlement_price": 100}, 409, "invalid_status_transition"),
    ]
    for action, params, status, code in late:
        response = world.act(admin, action, "US-CPI-2026-12", params)
        assert (response.status_code, response.json()["code"]) == (status, code), action
    assert world.act(admin, "close_market", "US-CPI-2026-12").status_code == 201
    after_close = world.counts()
    half = world.act(admin, "resolve_market", "US-CPI-2026-12", {"settlement_price": 50})
    assert half.status_code == 422 and half.json()["code"] == "invalid_settlement_price"
    assert world.counts() == after_close and after_close[3] == before[3] + 1
    host = world.host_market("US-CPI-2026-12")
    assert host is not None and host["status"] == "closed"


def test_concurrent_approvals_create_the_market_once(stack: FunctionsStack) -> None:
    """Two admins approve one market at the same moment: the row lock lets one through."""
    world = World(stack)
    alice = world.user("alice")
    admins = [world.admin("admin-a"), world.admin("admin-b")]
    assert world.request_market(alice).status_code == 201
    headers = [world.headers(a) for a in admins]  # codes taken before the threads start
    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def approve(h: dict[str, str]) -> None:
        barrier.wait()
        body = {"action": "approve_market", "target": "US-CPI-2026-12", "params": {"risk_level": "low"}}
        response = world.client.post("/api/v1/admin/action", json={**body, "reason": "race"}, headers=h)
        with lock:
            results.append((response.status_code, response.json().get("code", "")))

    threads = [threading.Thread(target=approve, args=(h,)) for h in headers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(201, ""), (409, "invalid_status_transition")]
    detail = world.detail("US-CPI-2026-12")
    assert detail["status"] == "approved" and detail["approval"]["count"] == 1
    assert world.verify_audit(admins[0])["events"] == 1
