"""Orders through the public API against real PostgreSQL and a real orderbook host process.

Markets are created directly on the host (signed), so these tests depend only on auth.
Every refusal is checked to leave the host's state hash unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from functions.auth import AuthConfig, Principal, TokenCodec
from functions.rate_limit import BucketSpec, RateLimiter
from tests.support import functions_stack
from tests.support.functions_stack import FunctionsStack

# the real-host fixture, registered in this module under the name tests ask for
stack = functions_stack.stack
START_MINOR = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def api(stack: FunctionsStack) -> FunctionsStack:
    """The stack with generous limits (tests that want 429 install their own limiter)."""
    app: Any = stack.client.app
    app.state.auth_config = AuthConfig(starting_balance_minor=START_MINOR, rate_capacity=1000)
    app.state.rate_limiter = RateLimiter(
        app.state.resources.kv,
        {"order:account": BucketSpec(10_000, 1000.0), "order:ip": BucketSpec(10_000, 1000.0)},
    )
    return stack


def make_market(stack: FunctionsStack, symbol: str, **fields: Any) -> None:
    with stack.host.client() as client:
        response = client.post("/markets", json={"symbol": symbol, "kind": "binary", **fields})
        assert response.status_code == 201, response.text


def user(stack: FunctionsStack, name: str) -> tuple[str, dict[str, str]]:
    """Register and log in; returns (user id = account id, bearer headers)."""
    creds = {"username": name, "password": f"pw-{name}-0123456789"}
    registered = stack.client.post("/api/v1/auth/register", json=creds)
    assert registered.status_code == 201, registered.text
    login = stack.client.post("/api/v1/auth/login", json=creds)
    assert login.status_code == 200, login.text
    return registered.json()["user_id"], {"Authorization": f"Bearer {login.json()['access_token']}"}


def state_hash(stack: FunctionsStack) -> str:
    value: str = stack.host.state()["state_hash"]
    return value


def order(
    stack: FunctionsStack, headers: dict[str, str], side: str, price: int, quantity: int, **extra: Any
) -> httpx.Response:
    body = {"symbol": "MKT", "side": side, "type": "limit", "price": price, "quantity": quantity, **extra}
    response: httpx.Response = stack.client.post("/api/v1/order", json=body, headers=headers)
    return response


def test_two_users_trade_fills_positions_and_pnl(api: FunctionsStack) -> None:
    make_market(api, "MKT")
    _, a_h = user(api, "alice")
    bob, b_h = user(api, "bob")

    ask = order(api, a_h, "sell", 60, 10, client_order_id="a-1")
    assert ask.status_code == 201, ask.text
    ask_body = ask.json()
    assert ask_body["status"] == "open"
    assert ask_body["fills"] == []
    assert ask_body["client_order_id"] == "a-1"
    assert ask_body["sequence_number"] >= 1

    bid = order(api, b_h, "buy", 65, 4)
    assert bid.status_code == 201, bid.text
    bid_body = bid.json()
    assert bid_body["status"] == "filled"
    assert bid_body["filled_quantity"] == 4
    [fill] = bid_body["fills"]
    assert (fill["price"], fill["quantity"], fill["liquidity"]) == (60, 4, "taker")
    assert bid_body["sequence_number"] > ask_body["sequence_number"]

    opened = api.client.get("/api/v1/orders/open", headers=a_h).json()["orders"]
    assert [(o["server_order_id"], o["client_order_id"], o["remaining_quantity"]) for o in opened] == [
        (ask_body["server_order_id"], "a-1", 6)
    ]
    assert opened[0]["status"] == "partially_filled"
    assert api.client.get("/api/v1/orders/open", headers=b_h).json() == {"orders": []}

    # alice withdraws the rest at 60; a second trade at 70 moves the mark for everyone
    cancelled = api.client.post(f"/api/v1/order/{ask_body['server_order_id']}/cancel", headers=a_h)
    assert (cancelled.json()["status"], cancelled.json()["filled_quantity"]) == ("cancelled", 4)
    assert order(api, a_h, "sell", 70, 2).json()["status"] == "open"
    assert order(api, b_h, "buy", 70, 2).json()["status"] == "filled"

    b_pos = api.client.get("/api/v1/positions", headers=b_h).json()
    assert b_pos == {
        "account": bob,
        "cash_minor": START_MINOR - 4 * 60 - 2 * 70,
        "reserved_minor": 0,
        "positions": [{"symbol": "MKT", "position": 6, "long": 6, "short": 0, "locked": 0}],
    }
    a_pos = api.client.get("/api/v1/positions", headers=a_h).json()
    # short collateral: (100 - price) per unit sold, out of cash for good once traded
    assert a_pos["cash_minor"] == START_MINOR - 40 * 4 - 30 * 2
    assert a_pos["reserved_minor"] == 0
    assert a_pos["positions"] == [{"symbol": "MKT", "position": -6, "long": 0, "short": 6, "locked": 0}]

    b_pnl = api.client.get("/api/v1/pnl", headers=b_h).json()
    [b_mark] = b_pnl["positions"]
    assert (b_mark["mark_price"], b_mark["mark_source"], b_mark["value_minor"]) == (70, "last_trade", 6 * 70)
    assert b_pnl["net_worth_minor"] == START_MINOR - 380 + 420
    assert b_pnl["starting_balance_minor"] == START_MINOR
    assert b_pnl["pnl_minor"] == 40
    a_pnl = api.client.get("/api/v1/pnl", headers=a_h).json()
    assert a_pnl["positions"][0]["value_minor"] == 6 * (100 - 70)
    assert a_pnl["pnl_minor"] == -40
    # zero-sum: what bob made, alice lost
    assert a_pnl["net_worth_minor"] + b_pnl["net_worth_minor"] == 2 * START_MINOR


def test_cancel_own_order_and_refuse_others(api: FunctionsStack) -> None:
    make_market(api, "MKT")
    _, a_h = user(api, "alice")
    _, b_h = user(api, "bob")
    placed = order(api, a_h, "buy", 40, 5, client_order_id="c-1").json()
    oid = placed["server_order_id"]

    before = state_hash(api)
    for path, headers in (
        (f"/api/v1/order/{oid}/cancel", b_h),  # someone else's order
        ("/api/v1/order/999999/cancel", b_h),  # no such order: the same answer
    ):
        refused = api.client.post(path, headers=headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "order_not_open"
        assert refused.headers["content-type"] == "application/problem+json"
    for path, status, code in (
        ("/api/v1/order/0/cancel", 422, "validation_error"),
        ("/api/v1/order/abc/cancel", 422, "validation_error"),
        (f"/api/v1/order/{2**63}/cancel", 422, "validation_error"),
    ):
        refused = api.client.post(path, headers=b_h)
        assert (refused.status_code, refused.json()["code"]) == (status, code), refused.text
    assert state_hash(api) == before

    cancelled = api.client.post(f"/api/v1/order/{oid}/cancel", headers=a_h)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["server_order_id"], body["client_order_id"], body["status"]) == (oid, "c-1", "cancelled")
    assert (body["filled_quantity"], body["remaining_quantity"]) == (0, 0)
    assert api.client.get("/api/v1/orders/open", headers=a_h).json() == {"orders": []}
    # the reservation came back
    assert api.client.get("/api/v1/positions", headers=a_h).json()["reserved_minor"] == 0

    again = api.client.post(f"/api/v1/order/{oid}/cancel", headers=a_h)
    assert (again.status_code, again.json()["code"]) == (409, "order_not_open")


def test_viewer_cannot_trade_but_can_read(api: FunctionsStack) -> None:
    make_market(api, "MKT")
    viewer, v_h = user(api, "vera")
    with api.client.app.state.resources.pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE users SET role = 'viewer' WHERE id = %s", (viewer,))
    before = state_hash(api)
    refused = order(api, v_h, "buy", 40, 1)
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    refused = api.client.post("/api/v1/order/1/cancel", headers=v_h)
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert state_hash(api) == before
    assert api.client.get("/api/v1/positions", headers=v_h).json()["cash_minor"] == START_MINOR


GOOD = {"symbol": "MKT", "side": "buy", "type": "limit", "price": 40, "quantity": 5, "time_in_force": "GTC"}
PAST = "2020-01-01T00:00:00Z"

# (name, body changes (None deletes the field), status, code)
BAD_FIELDS: list[tuple[str, dict[str, Any], int, str]] = [
    ("symbol missing", {"symbol": None}, 422, "missing_field"),
    ("symbol lower case", {"symbol": "mkt"}, 422, "validation_error"),
    ("symbol a number", {"symbol": 7}, 422, "validation_error"),
    ("symbol unknown", {"symbol": "NOPE"}, 404, "unknown_symbol"),
    ("symbol halted", {"symbol": "HALTED"}, 409, "market_not_open"),
    ("side missing", {"side": None}, 422, "missing_field"),
    ("side bad", {"side": "hold"}, 422, "invalid_enum"),
    ("type bad", {"type": "stop"}, 422, "invalid_enum"),
    ("price a string", {"price": "40"}, 422, "validation_error"),
    ("price a float", {"price": 40.0}, 422, "validation_error"),
    ("price a bool", {"price": True}, 422, "validation_error"),
    ("price negative", {"price": -1}, 422, "validation_error"),
    ("price huge", {"price": 10**12}, 422, "validation_error"),
    ("price above market", {"price": 100}, 422, "invalid_price"),
    ("price zero", {"price": 0}, 422, "invalid_price"),
    ("price off grid", {"symbol": "TICK5", "price": 42}, 422, "invalid_price"),
    ("limit without price", {"price": None}, 422, "invalid_price"),
    ("quantity missing", {"quantity": None}, 422, "missing_field"),
    ("quantity zero", {"quantity": 0}, 422, "validation_error"),
    ("quantity negative", {"quantity": -5}, 422, "validation_error"),
    ("quantity a string", {"quantity": "5"}, 422, "validation_error"),
    ("quantity a float", {"quantity": 5.5}, 422, "validation_error"),
    ("quantity huge", {"quantity": 10**10}, 422, "validation_error"),
    ("quantity unaffordable", {"quantity": 1_000_000}, 422, "insufficient_funds"),
    ("time_in_force bad", {"time_in_force": "DAY"}, 422, "invalid_enum"),
    ("time_in_force lower", {"time_in_force": "gtc"}, 422, "invalid_enum"),
    ("FOK not fillable", {"time_in_force": "FOK"}, 409, "fok_not_fillable"),
    ("GTD without expiry", {"time_in_force": "GTD"}, 422, "invalid_expiry"),
    ("GTD expired", {"time_in_force": "GTD", "expire_at": PAST}, 422, "invalid_expiry"),
    ("expiry not a time", {"time_in_force": "GTD", "expire_at": "tomorrow"}, 422, "validation_error"),
    (
        "expiry without zone",
        {"time_in_force": "GTD", "expire_at": "2030-01-01T00:00:00"},
        422,
        "validation_error",
    ),
    ("expiry on GTC", {"expire_at": "2030-01-01T00:00:00Z"}, 422, "invalid_expiry"),
    ("post_only a string", {"post_only": "yes"}, 422, "validation_error"),
    ("post_only would cross", {"post_only": True, "price": 60}, 409, "post_only_would_cross"),
    (
        "post_only market order",
        {"type": "market", "post_only": True, "time_in_force": "IOC"},
        422,
        "invalid_order",
    ),
    ("client_order_id bad chars", {"client_order_id": "no spaces!"}, 422, "validation_error"),
    ("client_order_id too long", {"client_order_id": "x" * 65}, 422, "validation_error"),
    ("client_order_id a number", {"client_order_id": 12}, 422, "validation_error"),
    ("unknown field", {"leverage": 100}, 422, "unknown_field"),
    ("account smuggled in", {"account": "u-someone-else"}, 422, "unknown_field"),
    ("sell without position", {"symbol": "NOSHORT", "side": "sell"}, 422, "insufficient_position"),
]


def test_every_bad_field_is_refused_with_a_code_and_no_state_change(api: FunctionsStack) -> None:
    make_market(api, "MKT")
    make_market(api, "HALTED", status="halted")
    make_market(api, "TICK5", kind="scalar", tick_size=5, price_min=5, price_max=95)
    make_market(api, "NOSHORT", allow_short=False)
    _, a_h = user(api, "alice")
    _, b_h = user(api, "bob")
    assert order(api, a_h, "sell", 60, 1).status_code == 201  # resting, for post_only_would_cross
    assert api.client.post("/api/v1/order", json=GOOD, headers=b_h).status_code == 201  # GOOD is good
    before = state_hash(api)

    for name, changes, status, code in BAD_FIELDS:
        body = {**GOOD, **changes}
        body = {k: v for k, v in body.items() if v is not None}
        response = api.client.post("/api/v1/order", json=body, headers=b_h)
        assert (response.status_code, response.json().get("code")) == (status, code), (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name

    raw_cases: list[tuple[bytes, int, str]] = [
        (b'{"symbol": "MKT", ', 400, "malformed_json"),
        (b"[1, 2]", 422, "validation_error"),
        (b"", 422, "missing_field"),
        (b'"order"', 422, "validation_error"),
    ]
    for raw, status, code in raw_cases:
        headers = {**b_h, "Content-Type": "application/json"}
        response = api.client.post("/api/v1/order", content=raw, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), (raw, response.text)
    huge = api.client.post(
        "/api/v1/order",
        content=b"{" + b" " * (11 * 1024 * 1024) + b"}",
        headers={**b_h, "Content-Type": "application/json"},
    )
    assert (huge.status_code, huge.json()["code"]) == (413, "payload_too_large")
    assert state_hash(api) == before
    assert len(api.client.get("/api/v1/orders/open", headers=b_h).json()["orders"]) == 1


def test_missing_expired_and_forged_tokens_are_refused(api: FunctionsStack) -> None:
    make_market(api, "MKT")
    alice, a_h = user(api, "alice")
    settings = api.settings
    principal = Principal(user_id=alice, username="alice", role="editor")
    expired, _ = TokenCodec(settings).mint(principal, time.time() - settings.jwt_ttl_s - 60)
    claims = jwt.decode(a_h["Authorization"].split()[1], options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-secret-0123456789abcdef-0123456789", algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")
    before = state_hash(api)
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "not_authenticated"),
        ({"Authorization": f"Bearer {expired}"}, "token_expired"),
        ({"Authorization": f"Bearer {forged}"}, "invalid_token"),
        ({"Authorization": f"Bearer {unsigned}"}, "invalid_token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
        ({"Authorization": f"Basic {a_h['Authorization'].split()[1]}"}, "invalid_token"),
    ]
    for headers, code in cases:
        for method, path in (
            ("POST", "/api/v1/order"),
            ("POST", "/api/v1/order/1/cancel"),
            ("GET", "/api/v1/orders/open"),
            ("GET", "/api/v1/positions"),
            ("GET", "/api/v1/pnl"),
        ):
            response = api.client.request(
                method, path, json=GOOD if method == "POST" else None, headers=headers
            )
            assert (response.status_code, response.json()["code"]) == (401, code), (path, code, response.text)
    assert state_hash(api) == before
    assert order(api, a_h, "buy", 40, 1).status_code == 201


def test_rate_limits_answer_429_with_retry_after(stack: FunctionsStack) -> None:
    app: Any = stack.client.app
    app.state.auth_config = AuthConfig(starting_balance_minor=START_MINOR, rate_capacity=1000)
    clock = Clock()
    app.state.rate_limiter = RateLimiter(
        app.state.resources.kv,
        {"order:account": BucketSpec(2, 0.5), "order:ip": BucketSpec(4, 0.25)},
        clock,
    )
    make_market(stack, "MKT")
    _, a_h = user(stack, "alice")
    _, b_h = user(stack, "bob")

    assert order(stack, a_h, "buy", 40, 1).status_code == 201
    assert stack.client.post("/api/v1/order/999/cancel", headers=a_h).status_code == 409  # counts too
    before = state_hash(stack)
    limited = order(stack, a_h, "buy", 40, 1)
    assert limited.status_code == 429, limited.text
    assert limited.headers["Retry-After"] == "2"  # 0.5 token/s
    assert (limited.json()["code"], limited.json()["bucket"]) == ("rate_limited", "order:account")
    assert state_hash(stack) == before

    # bob has his own account bucket, but shares the address: 4th request from it passes, 5th not
    assert order(stack, b_h, "buy", 40, 1).status_code == 201
    limited = order(stack, b_h, "buy", 40, 1)
    assert limited.status_code == 429
    assert (limited.json()["bucket"], limited.headers["Retry-After"]) == ("order:ip", "4")

    clock.now_ms += 4000  # one IP token back, and alice's account bucket refilled
    assert order(stack, a_h, "buy", 40, 1).status_code == 201
    assert order(stack, a_h, "buy", 40, 1).status_code == 429
    # reads are not order routes: never limited
    assert stack.client.get("/api/v1/positions", headers=a_h).status_code == 200


def test_repeated_client_order_id_returns_the_first_order(api: FunctionsStack) -> None:
    make_market(api, "MKT")
    alice, a_h = user(api, "alice")
    _, b_h = user(api, "bob")

    first = order(api, a_h, "sell", 60, 5, client_order_id="a-1").json()
    for retry_body in ({"price": 60}, {"price": 70, "quantity": 1}):  # even with another body
        again = order(api, a_h, "sell", client_order_id="a-1", **{"quantity": 5, **retry_body})
        assert again.status_code == 201, again.text
        body = again.json()
        assert body["duplicate"] is True
        assert (body["server_order_id"], body["status"], body["price"], body["quantity"]) == (
            first["server_order_id"],
            "open",
            60,
            5,
        )
    assert len(api.client.get("/api/v1/orders/open", headers=a_h).json()["orders"]) == 1
    # another account may use the same client id for its own order
    taker = order(api, b_h, "buy", 60, 2, client_order_id="a-1").json()
    assert taker["duplicate"] is False
    assert taker["status"] == "filled"

    # resting, partially filled: the host's live state
    again = order(api, a_h, "sell", 60, 5, client_order_id="a-1").json()
    assert (again["status"], again["filled_quantity"], again["remaining_quantity"]) == (
        "partially_filled",
        2,
        3,
    )

    # filled at once: the recorded ack, and no second trade
    retry = order(api, b_h, "buy", 60, 2, client_order_id="a-1").json()
    assert retry["duplicate"] is True
    assert (retry["server_order_id"], retry["status"], retry["fills"]) == (
        taker["server_order_id"],
        "filled",
        taker["fills"],
    )
    assert api.client.get("/api/v1/positions", headers=b_h).json()["positions"][0]["long"] == 2

    # cancelled here: the recorded cancel
    placed = order(api, a_h, "buy", 10, 1, client_order_id="a-2").json()
    api.client.post(f"/api/v1/order/{placed['server_order_id']}/cancel", headers=a_h)
    retry = order(api, a_h, "buy", 10, 1, client_order_id="a-2").json()
    assert (retry["server_order_id"], retry["status"], retry["duplicate"]) == (
        placed["server_order_id"],
        "cancelled",
        True,
    )

    # filled later by someone else: the read model's final state once the projector has it
    order(api, b_h, "buy", 60, 3)
    stale = order(api, a_h, "sell", 60, 5, client_order_id="a-1").json()
    assert stale["status"] == "open"  # last state seen here; the projector has not run
    with api.client.app.state.resources.pool.connection() as conn:  # type: ignore[attr-defined]
        conn.execute(
            "INSERT INTO rm_orders (server_order_id, account, symbol, side, type, time_in_force, price,"
            " quantity, filled, remaining, status, client_order_id, created_ts_ms, updated_ts_ms,"
            " created_wal_seq, updated_wal_seq)"
            " VALUES (%s, %s, 'MKT', 'sell', 'limit', 'GTC', 60, 5, 5, 0, 'filled', 'a-1', 1, 2, 1, 2)",
            (first["server_order_id"], alice),
        )
    final = order(api, a_h, "sell", 60, 5, client_order_id="a-1").json()
    assert (final["status"], final["filled_quantity"], final["remaining_quantity"]) == ("filled", 5, 0)
