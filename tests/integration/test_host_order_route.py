"""The lean `POST /order` route answers byte for byte what the FastAPI route answers.

Two hosts on their own data dirs, one with `LeanOrderRoute` (the default) and one with FastAPI
alone (`lean_order_route=False`), get the same request bytes in the same order: valid orders
(resting, crossing, market, duplicate, engine refusals), every signature failure, and bad
bodies, media types and targets. Status, headers and body must be equal, and so must the two
hosts' state hashes at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from emlib.settings import Settings
from emlib.signing import signed_headers
from orderbook_host.app import LeanOrderRoute, build_host, create_app
from orderbook_host.host import OrderbookHost
from orderbook_host.schemas import OrderRequest
from tests.support.host_process import TEST_HMAC_KEY

SECRET = TEST_HMAC_KEY.secret
FIXED_NOW_MS = 1_800_000_000_000
Request = tuple[str, str, dict[str, str], bytes]  # method, target, headers, body


def _settings(data_dir: Path) -> Settings:
    return Settings(
        APP_ENV="test",
        LOG_LEVEL="WARNING",
        DATA_DIR=data_dir,
        ORDERBOOK_SHARD_ID="order-route-test",
        ORDERBOOK_SYMBOLS="LR-A,LR-B,LR-U",
        FSYNC_POLICY="always",
        HMAC_KEYS=json.dumps([TEST_HMAC_KEY.model_dump()]),
        OBJECT_STORE_URL=f"file://{data_dir / 'objects'}",
        WAL_DIR=data_dir / "wal",
        MAX_BODY_BYTES=4096,
    )


def _host_at_fixed_time(settings: Settings) -> OrderbookHost:
    """A real host whose clock stands still, so both hosts stamp the same times."""
    host = build_host(settings)
    host.clock_ms = lambda: FIXED_NOW_MS
    return host


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    lean = create_app(_settings(tmp_path / "lean"), _host_at_fixed_time)
    reference = create_app(_settings(tmp_path / "reference"), _host_at_fixed_time, lean_order_route=False)
    with TestClient(lean) as a, TestClient(reference) as b:
        yield a, b


_counter = iter(range(10**9))


def _signed(
    target: str,
    body: bytes,
    *,
    method: str = "POST",
    content_type: str | None = "application/json",
    secret: str = SECRET,
    ts_s: int | None = None,
    key_id: str = TEST_HMAC_KEY.id,
) -> Request:
    nonce = f"lean-route-nonce-{next(_counter):08d}"
    ts = int(time.time()) if ts_s is None else ts_s
    headers = signed_headers(key_id, secret, method, target, body, ts, nonce)
    headers["X-Request-Id"] = f"req-{nonce}"
    if content_type is not None:
        headers["Content-Type"] = content_type
    return method, target, headers, body


def _order(**fields: object) -> bytes:
    body: dict[str, object] = {
        "account": "alice",
        "symbol": "LR-A",
        "side": "buy",
        "price": 40,
        "quantity": 5,
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def _setup() -> list[Request]:
    out = [
        _signed("/markets", json.dumps({"symbol": symbol, "kind": "binary"}).encode())
        for symbol in ("LR-A", "LR-B")
    ]
    for account in ("alice", "bob", "carol"):
        out.append(_signed(f"/accounts/{account}/deposit", json.dumps({"amount_minor": 100_000}).encode()))
    return out


def _cases() -> list[Request]:
    good = _signed("/order", _order(client_order_id="rest-1"))
    unsigned = {"Content-Type": "application/json", "X-Request-Id": "unsigned"}
    return [
        good,
        good,  # the same bytes again: nonce_reused
        _signed("/order", _order(client_order_id="rest-1")),  # duplicate client_order_id
        _signed("/order", _order(account="bob", side="sell", price=39, post_only=True)),  # would cross
        _signed("/order", _order(account="bob", side="sell", price=38, quantity=3, client_order_id="x-1")),
        _signed(
            "/order", _order(account="carol", side="sell", type="market", time_in_force="IOC", price=None)
        ),
        _signed("/order", _order(account="dave", quantity=10)),  # unknown account
        _signed("/order", _order(symbol="LR-U")),  # served here, never created
        _signed("/order", _order(symbol="ELSEWHERE")),  # another shard
        _signed("/order", _order(price=41, expire_at_ms=1, time_in_force="GTD")),
        _signed("/order", _order(quantity=10**12)),  # reaches the engine as an invalid quantity
        # signature failures
        ("POST", "/order", unsigned, _order()),
        _signed("/order", _order(), secret="another-secret-0123456789"),
        _signed("/order", _order(), ts_s=int(time.time()) - 600),
        _signed("/order", _order(), key_id="no-such-key"),
        _signed("/order", b'{"account": "alice", '),  # malformed: 400 before the signature
        ("POST", "/order", unsigned, b'{"account": "alice", '),
        ("POST", "/order", unsigned, _order(colour="red")),  # invalid and unsigned: 401
        # bad bodies, media types and targets
        _signed("/order", b""),
        _signed("/order", b'{"account": "\xff\xfe"}'),
        _signed("/order", b"[1, 2]"),
        _signed("/order", _order(colour="red")),
        _signed("/order", _order(quantity="5")),
        _signed("/order", _order(side="hold")),
        _signed("/order", b'{"symbol": "LR-A"}'),
        _signed("/order", _order(account="a" * 100)),
        _signed("/order", _order(client_order_id="a\\u0000b")),
        _signed("/order", b'{"account": "' + b"a" * 5000 + b'"}'),
        _signed("/order", _order(client_order_id="ct-1"), content_type="application/json; charset=utf-8"),
        _signed("/order", _order(client_order_id="ct-2"), content_type="text/plain"),
        _signed("/order", _order(client_order_id="ct-3"), content_type=None),
        _signed("/order", _order(client_order_id="ct-4"), content_type="application/merge-patch+json"),
        _signed("/order?x=1", _order(client_order_id="q-1")),
        _signed("/%6Frder", _order(client_order_id="p-1")),
        _signed("/order", b"", method="GET", content_type=None),
        _signed("/order", b"", method="PUT"),
        _signed("/order", _order(account="bob", side="sell", price=40, quantity=20, client_order_id="x-2")),
    ]


def _count_lean_orders(client: TestClient) -> list[int]:
    """Count the orders `LeanOrderRoute` itself accepted (wraps its `accept`)."""
    app = client.app
    assert isinstance(app, FastAPI)
    route = next(r for r in app.router.routes if isinstance(r, Route) and isinstance(r.app, LeanOrderRoute))
    lean = route.app
    assert isinstance(lean, LeanOrderRoute)
    count = [0]
    accept = lean.accept

    async def counted(body: OrderRequest) -> dict[str, Any]:
        count[0] += 1
        return await accept(body)

    lean.accept = counted
    return count


def _send(client: TestClient, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    method, target, headers, body = request
    response = client.request(method, target, headers=headers, content=body)
    return response.status_code, sorted(response.headers.multi_items()), response.content


def test_lean_route_answers_like_the_fastapi_route(clients: tuple[TestClient, TestClient]) -> None:
    lean, reference = clients
    served = _count_lean_orders(lean)
    for request in _setup():
        assert _send(lean, request) == _send(reference, request)
    statuses = set()
    for request in _cases():
        got, want = _send(lean, request), _send(reference, request)
        assert got == want, request
        statuses.add(got[0])
    assert {201, 400, 401, 404, 405, 409, 413, 421, 422} <= statuses
    assert served and served[0] >= 10  # the well-formed orders really took the lean route
    state = _signed("/debug/state_hash", b"", method="GET", content_type=None)
    assert (
        lean.get(state[1], headers=state[2]).json()["state_hash"]
        == (reference.get(state[1], headers=state[2]).json()["state_hash"])
    )
