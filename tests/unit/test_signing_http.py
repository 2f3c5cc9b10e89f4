"""Signing over HTTP: clients sign exactly the bytes that travel, the FastAPI dependency checks them."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from emlib.kv.base import NonceStore
from emlib.kv.memory import MemoryKeyValueStore
from emlib.service import create_service_app
from emlib.settings import HmacKey, Settings
from emlib.signing import Keyring, VerifiedCaller, verify
from emlib.signing_http import (
    HmacAuth,
    RequestsHmacAuth,
    SignedCaller,
    new_nonce,
    request_path_with_query,
    require_signature,
)

SECRET = "http-test-secret-0123456789"
START_S = 1_800_000_000.0


@dataclass
class FakeClock:
    now_s: float = START_S

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> FastAPI:
    ring = Keyring([HmacKey(id="svc-1", secret=SECRET, created_at_s=0)])
    kv = MemoryKeyValueStore(clock=clock)
    app = create_service_app("signing-test", Settings(APP_ENV="test"))
    app.state.signature_check = require_signature(lambda: ring, NonceStore(kv), clock)
    direct = require_signature(lambda: ring, NonceStore(kv), clock)

    @app.api_route("/echo/{name}", methods=["POST", "PUT"])
    async def echo(name: str, request: Request, caller: SignedCaller) -> dict[str, Any]:
        raw = await request.body()
        return {
            "caller": caller,
            "name": name,
            "query": request.url.query,
            "body_sha256": hashlib.sha256(raw).hexdigest(),
            "json": await request.json(),
        }

    @app.get("/items")
    # `= Depends(...)`: an Annotated alias naming a local would not resolve under `from __future__`
    def items(q: str = "", caller: str = Depends(direct)) -> dict[str, str]:
        return {"caller": caller, "q": q}

    return app


def client(app: FastAPI, clock: FakeClock, **auth_kwargs: Any) -> TestClient:
    auth_kwargs.setdefault("key_id", "svc-1")
    auth_kwargs.setdefault("secret", SECRET)
    http = TestClient(app)
    http.auth = HmacAuth(clock=clock, **auth_kwargs)  # TestClient is an httpx.Client
    return http


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    code: str = response.json()["code"]
    return code


def test_round_trip_with_query_and_non_ascii_json(app: FastAPI, clock: FakeClock) -> None:
    payload = {"title": "Zürich — 東京 ✓", "n": 1}
    with client(app, clock) as http:
        response = http.post(
            "/echo/caf%C3%A9%20x", params={"q": "a b&c=d", "x": "ü", "empty": ""}, json=payload
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["caller"] == "svc-1"
    assert body["name"] == "café x"
    assert body["json"] == payload
    assert "%C3%BC" in body["query"] and "a+b%26c%3Dd" in body["query"]
    sent = response.request.content
    assert "東京".encode() in sent  # the client sent raw UTF-8, and signed those bytes
    assert body["body_sha256"] == hashlib.sha256(sent).hexdigest()


def test_get_with_query_through_a_direct_dependency(app: FastAPI, clock: FakeClock) -> None:
    with client(app, clock) as http:
        response = http.get("/items", params={"q": "ünï code"})
    assert response.status_code == 200, response.text
    assert response.json() == {"caller": "svc-1", "q": "ünï code"}


def test_unsigned_request_is_refused_with_problem_json(app: FastAPI) -> None:
    with TestClient(app) as http:
        response = http.post("/echo/x", json={})
    assert response.status_code == 401
    assert problem_code(response) == "signature_missing"
    assert response.headers["www-authenticate"] == "HMAC-SHA256"


def test_unknown_key_and_wrong_secret(app: FastAPI, clock: FakeClock) -> None:
    with client(app, clock, key_id="svc-9") as http:
        assert problem_code(http.post("/echo/x", json={})) == "unknown_key"
    with client(app, clock, secret="not-the-right-secret") as http:
        assert problem_code(http.post("/echo/x", json={})) == "signature_invalid"


def test_client_clock_skew_window(app: FastAPI, clock: FakeClock) -> None:
    for offset_s, expected in [(120, 200), (-120, 200), (121, 401), (-121, 401)]:
        skewed = FakeClock(clock.now_s + offset_s)
        with TestClient(app) as http:
            response = http.get("/items", auth=HmacAuth("svc-1", SECRET, clock=skewed))
        assert response.status_code == expected, (offset_s, response.text)
        if expected == 401:
            assert problem_code(response) == "timestamp_skew"


def test_replayed_nonce_is_refused_until_it_expires(app: FastAPI, clock: FakeClock) -> None:
    fixed = "replayed-nonce-0000000001"
    with client(app, clock, nonce_factory=lambda: fixed) as http:
        assert http.post("/echo/x", json={"a": 1}).status_code == 200
        clock.now_s += 599
        assert problem_code(http.post("/echo/x", json={"a": 1})) == "nonce_reused"
        clock.now_s += 1
        assert http.post("/echo/x", json={"a": 1}).status_code == 200


def test_fresh_nonce_per_request(app: FastAPI, clock: FakeClock) -> None:
    with client(app, clock) as http:
        for _ in range(3):
            assert http.post("/echo/x", json={"same": "body"}).status_code == 200


class Tamper(httpx.BaseTransport):
    """Changes the request after signing, as a man in the middle would."""

    def __init__(self, app: FastAPI, change: str) -> None:
        self.inner: httpx.BaseTransport = TestClient(app)._transport
        self.change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url, method, content = request.url, request.method, request.content
        if self.change == "body":
            content = content.replace(b"1", b"2")
        elif self.change == "query":
            url = url.copy_with(query=b"q=evil")
        elif self.change == "path":
            url = url.copy_with(path="/echo/y")
        elif self.change == "method":
            method = "PUT"
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        forged = httpx.Request(method, url, headers=headers, content=content)
        return self.inner.handle_request(forged)


@pytest.mark.parametrize("change", ["body", "query", "path", "method"])
def test_tampering_in_transit_is_refused(app: FastAPI, clock: FakeClock, change: str) -> None:
    with httpx.Client(
        transport=Tamper(app, change),
        base_url="http://testserver",
        auth=HmacAuth("svc-1", SECRET, clock=clock),
    ) as http:
        response = http.post("/echo/x", params={"q": "ok"}, json={"amount": 1})
    assert response.status_code == 401
    assert problem_code(response) == "signature_invalid"


def test_control_request_through_the_tamper_transport_passes(app: FastAPI, clock: FakeClock) -> None:
    with httpx.Client(
        transport=Tamper(app, "none"),
        base_url="http://testserver",
        auth=HmacAuth("svc-1", SECRET, clock=clock),
    ) as http:
        assert http.post("/echo/x", params={"q": "ok"}, json={"amount": 1}).status_code == 200


def test_path_falls_back_to_reencoding_when_raw_path_is_absent() -> None:
    # Mangum sets raw_path None; the decoded path is re-encoded canonically
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/echo/café x",
        "raw_path": None,
        "query_string": b"a=1&b=%C3%BC",
        "headers": [],
    }
    assert request_path_with_query(Request(scope)) == "/echo/caf%C3%A9%20x?a=1&b=%C3%BC"
    scope["query_string"] = b""
    assert request_path_with_query(Request(scope)) == "/echo/caf%C3%A9%20x"


def test_new_nonce_matches_the_contract() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(16 <= len(n) <= 64 and all(c.isalnum() or c in "-_" for c in n) for n in nonces)


class CaptureAdapter(requests.adapters.BaseAdapter):
    """Stands in for the network: keeps what requests would send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 204
        response.request = request
        return response

    def close(self) -> None:
        return None


def verify_prepared(prepared: requests.PreparedRequest, now_s: int) -> VerifiedCaller | object:
    ring = Keyring([HmacKey(id="svc-1", secret=SECRET)])
    body = prepared.body if isinstance(prepared.body, bytes) else b""
    assert prepared.method is not None
    headers: Mapping[str, str] = Headers(dict(prepared.headers))
    return verify(ring, prepared.method, prepared.path_url, headers, body, now_s, lambda _k, _n: True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"title": "Zürich ✓"}},
        {"data": "plain text é"},  # a str body: sent and signed as UTF-8
        {"data": b"\x00\xffraw"},
        {"params": {"q": "a b", "z": "ü"}},
    ],
)
def test_requests_auth_signs_what_requests_sends(kwargs: dict[str, Any]) -> None:
    clock = FakeClock()
    session = requests.Session()
    adapter = CaptureAdapter()
    session.mount("http://", adapter)
    auth = RequestsHmacAuth("svc-1", SECRET, clock=clock)
    method = "GET" if "params" in kwargs else "POST"
    session.request(method, "http://svc.local/api/v1/x%20y", auth=auth, **kwargs)
    (prepared,) = adapter.sent
    assert prepared.body is None or isinstance(prepared.body, bytes)
    if isinstance(prepared.body, bytes):
        assert prepared.headers["Content-Length"] == str(len(prepared.body))
    result = verify_prepared(prepared, int(clock()))
    assert isinstance(result, VerifiedCaller), result
    assert "?" in prepared.path_url or "params" not in kwargs


def test_requests_auth_refuses_streamed_bodies() -> None:
    session = requests.Session()
    session.mount("http://", CaptureAdapter())
    with pytest.raises(TypeError):
        session.post("http://svc.local/x", data=iter([b"a", b"b"]), auth=RequestsHmacAuth("svc-1", SECRET))


def test_httpx_auth_signs_a_streamed_body_after_reading_it(app: FastAPI, clock: FakeClock) -> None:
    chunks = itertools.chain([b'{"a": '], [b"1}"])
    with client(app, clock) as http:
        response = http.post("/echo/x", content=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["json"] == {"a": 1}


def test_clients_sign_with_the_newest_key_of_a_keyring(app: FastAPI, clock: FakeClock) -> None:
    ring = Keyring(
        [
            HmacKey(id="old", secret="old-secret-0123456789", created_at_s=0),
            HmacKey(id="svc-1", secret=SECRET, created_at_s=5),
        ]
    )
    with TestClient(app) as http:
        response = http.get("/items", auth=HmacAuth.from_keyring(ring, clock=clock))
    assert response.json()["caller"] == "svc-1"
    session = requests.Session()
    adapter = CaptureAdapter()
    session.mount("http://", adapter)
    session.get("http://svc.local/x?y=1", auth=RequestsHmacAuth.from_keyring(ring, clock=clock))
    assert adapter.sent[0].headers["X-Key-Id"] == "svc-1"
    assert isinstance(verify_prepared(adapter.sent[0], int(clock())), VerifiedCaller)
