"""Bad input at a real orderbook host: each gets a 4xx problem+json with its stable code and
changes no state (contract.md "Errors"; the state hash covers books, accounts, dedup tables,
channel counters and the WAL position).

One host process serves the module (shard of BAD-A, BAD-S, BAD-U; BAD-U is never created;
bodies capped at 4 KiB). Each case compares `GET /debug/state_hash` before and after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emlib.signing import signed_headers
from tests.support.host_process import TEST_HMAC_KEY, HostProcess

BODY_BYTES_MAX = 4096
ORDER = {
    "account": "alice",
    "symbol": "BAD-A",
    "side": "buy",
    "type": "limit",
    "price": 40,
    "quantity": 5,
    "time_in_force": "GTC",
    "client_order_id": "ok-1",
}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    data = Path(tmp_path_factory.mktemp("bad-input")) / "data"
    process = HostProcess(
        data, symbols="BAD-A,BAD-S,BAD-U", extra_env={"MAX_BODY_BYTES": str(BODY_BYTES_MAX)}
    )
    process.start()
    with process.client() as client:
        for body in (
            {"symbol": "BAD-A", "kind": "binary"},
            {"symbol": "BAD-S", "kind": "scalar", "tick_size": 5, "price_min": 100, "price_max": 1000},
        ):
            client.post("/markets", json=body).raise_for_status()
        for account in ("alice", "bob"):
            client.post(f"/accounts/{account}/deposit", json={"amount_minor": 10_000}).raise_for_status()
        resting = client.post("/order", json={**ORDER, "client_order_id": "resting-1"})
        assert resting.status_code == 201
        process.env["RESTING_ORDER_ID"] = str(resting.json()["server_order_id"])
    yield process
    process.kill()


def _state(host: HostProcess) -> str:
    return str(host.state()["state_hash"])


def _expect_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["type"].endswith(code) and "title" in body


def _send(host: HostProcess, method: str, path: str, content: bytes, **headers: str) -> httpx.Response:
    with host.client() as client:
        return client.request(
            method, path, content=content, headers={"content-type": "application/json", **headers}
        )


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in ORDER.items() if k != key}


ORDER_CASES: list[tuple[str, Any, int, str]] = [
    *[(f"missing {k}", _without(k), 422, "missing_field") for k in ("account", "symbol", "side", "quantity")],
    ("quantity as string", {**ORDER, "quantity": "10"}, 422, "validation_error"),
    ("quantity as float", {**ORDER, "quantity": 10.5}, 422, "validation_error"),
    ("quantity as integral float", {**ORDER, "quantity": 10.0}, 422, "validation_error"),
    ("quantity as bool", {**ORDER, "quantity": True}, 422, "validation_error"),
    ("quantity null", {**ORDER, "quantity": None}, 422, "validation_error"),
    ("quantity zero", {**ORDER, "quantity": 0}, 422, "validation_error"),
    ("quantity negative", {**ORDER, "quantity": -5}, 422, "validation_error"),
    ("quantity huge", {**ORDER, "quantity": 10**12}, 422, "validation_error"),
    ("quantity beyond 64 bits", {**ORDER, "quantity": 2**80}, 422, "validation_error"),
    ("price as string", {**ORDER, "price": "40"}, 422, "validation_error"),
    ("price as float", {**ORDER, "price": 40.5}, 422, "validation_error"),
    ("price as bool", {**ORDER, "price": False}, 422, "validation_error"),
    ("price negative", {**ORDER, "price": -1}, 422, "validation_error"),
    ("price huge", {**ORDER, "price": 10**15}, 422, "validation_error"),
    ("account bad pattern", {**ORDER, "account": "al ice"}, 422, "validation_error"),
    ("account as number", {**ORDER, "account": 7}, 422, "validation_error"),
    ("symbol lower case", {**ORDER, "symbol": "bad-a"}, 422, "validation_error"),
    ("client_order_id too long", {**ORDER, "client_order_id": "x" * 65}, 422, "validation_error"),
    ("side unknown", {**ORDER, "side": "hold"}, 422, "invalid_enum"),
    ("type unknown", {**ORDER, "type": "stop"}, 422, "invalid_enum"),
    ("time_in_force unknown", {**ORDER, "time_in_force": "DAY"}, 422, "invalid_enum"),
    ("time_in_force lower case", {**ORDER, "time_in_force": "gtc"}, 422, "invalid_enum"),
    ("stp unknown", {**ORDER, "stp": "nope"}, 422, "invalid_enum"),
    ("post_only as string", {**ORDER, "post_only": "true"}, 422, "validation_error"),
    ("unknown extra field", {**ORDER, "leverage": 10}, 422, "unknown_field"),
    ("body is a list", [ORDER], 422, "validation_error"),
    ("body is a string", "order", 422, "validation_error"),
    # refused by the engine: state-dependent checks (ENGINE_REFUSAL_IDS)
    ("price above the binary bound", {**ORDER, "price": 100}, 422, "invalid_price"),
    ("price below the binary bound", {**ORDER, "price": 0}, 422, "invalid_price"),
    ("price off the tick grid", {**ORDER, "symbol": "BAD-S", "price": 102}, 422, "invalid_price"),
    ("price above the scalar bound", {**ORDER, "symbol": "BAD-S", "price": 1005}, 422, "invalid_price"),
    ("limit order without a price", _without("price"), 422, "invalid_price"),
    ("unknown symbol in this shard", {**ORDER, "symbol": "BAD-U"}, 404, "unknown_symbol"),
    ("unknown account", {**ORDER, "account": "nobody"}, 404, "unknown_account"),
    ("cost above free cash", {**ORDER, "quantity": 10_000}, 422, "insufficient_funds"),
    ("post-only IOC", {**ORDER, "post_only": True, "time_in_force": "IOC"}, 422, "invalid_order"),
    ("GTD without expiry", {**ORDER, "time_in_force": "GTD"}, 422, "invalid_expiry"),
    ("symbol of another shard", {**ORDER, "symbol": "OTHER"}, 421, "wrong_shard"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [pytest.param(*case, id=case[0]) for case in ORDER_CASES],
)
def test_bad_order_is_refused_without_state_change(
    host: HostProcess, name: str, body: Any, status: int, code: str
) -> None:
    before = _state(host)
    _expect_problem(_send(host, "POST", "/order", json.dumps(body).encode()), status, code)
    assert _state(host) == before, f"{name} changed state"


RAW_CASES: list[tuple[str, str, bytes, int, str]] = [
    ("malformed JSON", "/order", b'{"account": "alice", ', 400, "malformed_json"),
    # FastAPI reports undecodable bytes as a generic 400 before JSON parsing
    ("not UTF-8", "/order", b'{"account": "\xff\xfe"}', 400, "bad_request"),
    ("empty body", "/order", b"", 422, "missing_field"),
    ("oversize body", "/order", b'{"account": "' + b"a" * BODY_BYTES_MAX + b'"}', 413, "payload_too_large"),
    ("oversize deposit", "/accounts/alice/deposit", b" " * (BODY_BYTES_MAX + 1), 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("name", "path", "content", "status", "code"), RAW_CASES, ids=[c[0] for c in RAW_CASES]
)
def test_bad_bytes_are_refused_without_state_change(
    host: HostProcess, name: str, path: str, content: bytes, status: int, code: str
) -> None:
    before = _state(host)
    _expect_problem(_send(host, "POST", path, content), status, code)
    assert _state(host) == before, f"{name} changed state"


def _signed(
    path: str, body: bytes, *, ts_s: int | None = None, nonce: str = "n" * 24, secret: str | None = None
) -> dict[str, str]:
    return signed_headers(
        TEST_HMAC_KEY.id,
        secret or TEST_HMAC_KEY.secret,
        "POST",
        path,
        body,
        int(time.time()) if ts_s is None else ts_s,
        nonce,
    )


def test_signature_failures_are_refused_without_state_change(host: HostProcess) -> None:
    body = json.dumps({**ORDER, "client_order_id": "sig-1"}).encode()
    headers = {"content-type": "application/json"}
    before = _state(host)
    with httpx.Client(base_url=host.url) as raw:
        _expect_problem(raw.post("/order", content=body, headers=headers), 401, "signature_missing")
        wrong = _signed("/order", body, secret="another-secret-0123456789", nonce="w" * 20)
        _expect_problem(
            raw.post("/order", content=body, headers={**headers, **wrong}), 401, "signature_invalid"
        )
        tampered = _signed("/order", body, nonce="t" * 20)  # signed one body, send another
        other = body.replace(b'"quantity": 5', b'"quantity": 6')
        assert other != body
        _expect_problem(
            raw.post("/order", content=other, headers={**headers, **tampered}), 401, "signature_invalid"
        )
        stale = _signed("/order", body, ts_s=int(time.time()) - 600, nonce="s" * 20)
        _expect_problem(raw.post("/order", content=body, headers={**headers, **stale}), 401, "timestamp_skew")
        unknown = {**_signed("/order", body, nonce="u" * 20), "X-Key-Id": "no-such-key"}
        _expect_problem(raw.post("/order", content=body, headers={**headers, **unknown}), 401, "unknown_key")
        assert _state(host) == before
        good = _signed("/order", body, nonce="r" * 20)
        assert raw.post("/order", content=body, headers={**headers, **good}).status_code == 201
        after_good = _state(host)
        replay = raw.post("/order", content=body, headers={**headers, **good})
        _expect_problem(replay, 401, "nonce_reused")
        assert _state(host) == after_good
        unsigned_get = raw.get("/accounts/alice")
        _expect_problem(unsigned_get, 401, "signature_missing")


OTHER_CASES: list[tuple[str, str, Any, int, str]] = [
    ("cancel missing order id", "/cancel", {"account": "alice"}, 422, "missing_field"),
    ("cancel id as string", "/cancel", {"account": "alice", "server_order_id": "1"}, 422, "validation_error"),
    ("cancel id zero", "/cancel", {"account": "alice", "server_order_id": 0}, 422, "validation_error"),
    (
        "cancel extra field",
        "/cancel",
        {"account": "alice", "server_order_id": 1, "x": 1},
        422,
        "unknown_field",
    ),
    (
        "cancel unknown order",
        "/cancel",
        {"account": "alice", "server_order_id": 999_999},
        409,
        "order_not_open",
    ),
    ("cancel another's order", "/cancel", {"account": "bob", "server_order_id": "RESTING"}, 403, "not_owner"),
    (
        "replace to zero",
        "/replace",
        {"account": "alice", "server_order_id": "RESTING", "quantity": 0},
        422,
        "validation_error",
    ),
    (
        "replace off-bound price",
        "/replace",
        {"account": "alice", "server_order_id": "RESTING", "quantity": 1, "price": 100},
        422,
        "invalid_price",
    ),
    ("market kind unknown", "/markets", {"symbol": "BAD-U", "kind": "lottery"}, 422, "invalid_enum"),
    ("market symbol pattern", "/markets", {"symbol": "bad u", "kind": "binary"}, 422, "validation_error"),
    (
        "market tick zero",
        "/markets",
        {"symbol": "BAD-U", "kind": "scalar", "tick_size": 0},
        422,
        "validation_error",
    ),
    (
        "market bounds inverted",
        "/markets",
        {"symbol": "BAD-U", "kind": "scalar", "price_min": 50, "price_max": 10},
        422,
        "invalid_market",
    ),
    ("market exists", "/markets", {"symbol": "BAD-A", "kind": "binary"}, 409, "market_exists"),
    (
        "market extra field",
        "/markets",
        {"symbol": "BAD-U", "kind": "binary", "owner": "me"},
        422,
        "unknown_field",
    ),
    ("market of another shard", "/markets", {"symbol": "OTHER", "kind": "binary"}, 421, "wrong_shard"),
    ("status unknown", "/markets/BAD-A/status", {"status": "paused"}, 422, "invalid_enum"),
    ("status of unknown market", "/markets/BAD-U/status", {"status": "halted"}, 404, "unknown_symbol"),
    ("status of another shard", "/markets/OTHER/status", {"status": "halted"}, 421, "wrong_shard"),
    (
        "resolve off the settlement set",
        "/markets/BAD-A/resolve",
        {"settlement_price": 50},
        422,
        "invalid_price",
    ),
    (
        "resolve price as string",
        "/markets/BAD-A/resolve",
        {"settlement_price": "100"},
        422,
        "validation_error",
    ),
    ("deposit zero", "/accounts/alice/deposit", {"amount_minor": 0}, 422, "validation_error"),
    ("deposit negative", "/accounts/alice/deposit", {"amount_minor": -5}, 422, "validation_error"),
    ("deposit as string", "/accounts/alice/deposit", {"amount_minor": "5"}, 422, "validation_error"),
    ("deposit as float", "/accounts/alice/deposit", {"amount_minor": 5.0}, 422, "validation_error"),
    ("deposit huge", "/accounts/alice/deposit", {"amount_minor": 10**16}, 422, "validation_error"),
    (
        "deposit extra field",
        "/accounts/alice/deposit",
        {"amount_minor": 5, "memo": "x"},
        422,
        "unknown_field",
    ),
    ("deposit bad account", "/accounts/al%20ice/deposit", {"amount_minor": 5}, 422, "validation_error"),
    (
        "withdraw above free cash",
        "/accounts/alice/withdraw",
        {"amount_minor": 10**9},
        422,
        "insufficient_funds",
    ),
    ("withdraw unknown account", "/accounts/nobody/withdraw", {"amount_minor": 1}, 404, "unknown_account"),
    ("withdraw missing amount", "/accounts/alice/withdraw", {}, 422, "missing_field"),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "code"), OTHER_CASES, ids=[c[0] for c in OTHER_CASES]
)
def test_bad_command_is_refused_without_state_change(
    host: HostProcess, name: str, path: str, body: Any, status: int, code: str
) -> None:
    if isinstance(body, dict) and body.get("server_order_id") == "RESTING":
        body = {**body, "server_order_id": int(host.env["RESTING_ORDER_ID"])}
    before = _state(host)
    _expect_problem(_send(host, "POST", path, json.dumps(body).encode()), status, code)
    assert _state(host) == before, f"{name} changed state"


def test_bad_snapshot_queries(host: HostProcess) -> None:
    with host.client() as client:
        _expect_problem(client.get("/snapshot", params={"symbol": "OTHER"}), 421, "wrong_shard")
        _expect_problem(client.get("/snapshot", params={"symbol": "BAD-U"}), 404, "unknown_symbol")
        _expect_problem(client.get("/snapshot", params={"symbol": "bad"}), 422, "validation_error")
        _expect_problem(
            client.get("/snapshot", params={"symbol": "BAD-A", "since": -1}), 422, "validation_error"
        )
        _expect_problem(
            client.get("/snapshot", params={"symbol": "BAD-A", "since": "x"}), 422, "validation_error"
        )
        _expect_problem(client.get("/accounts/nobody"), 404, "unknown_account")
