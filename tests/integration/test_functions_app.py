"""The functions app against real PostgreSQL: readiness, the signed audit verify endpoint,
and bad input on every route that exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emlib.audit import AuditLog
from emlib.db import make_pool
from emlib.settings import Settings
from emlib.signing_http import HmacAuth
from functions.app import create_app


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(APP_ENV="test", DATABASE_URL=db_url, DATA_DIR=str(tmp_path))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as c:
        yield c
    app.state.resources.close()


def _auth(settings: Settings) -> HmacAuth:
    key = settings.hmac_keys[-1]
    return HmacAuth(key.id, key.secret)


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "service": "functions"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "object_store": "ok"}


def test_ready_is_503_problem_when_the_database_is_gone(tmp_path: Path) -> None:
    settings = Settings(
        APP_ENV="test", DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", DATA_DIR=str(tmp_path)
    )
    with TestClient(create_app(settings)) as c:
        response = c.get("/ready")
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"
    assert response.json()["checks"]["database"].startswith("error")


def test_audit_verify_signed_reports_the_chain(client: TestClient, settings: Settings, db_url: str) -> None:
    with make_pool(db_url) as pool:
        log = AuditLog(pool, settings.audit_hmac_key)
        for n in range(3):
            log.append(actor="admin-1", action="approve_market", target=f"M{n}", payload={"n": n})
    response = client.get("/api/v1/admin/audit/verify", auth=_auth(settings))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["events"] == 3 and len(body["head_hash"]) == 64


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "signature_missing"),
        ({"X-Key-Id": "nobody", "X-Timestamp": "1", "X-Nonce": "n" * 16, "X-Signature": "00"}, "unknown_key"),
    ],
)
def test_audit_verify_refuses_unsigned_callers(
    client: TestClient, headers: dict[str, str], code: str
) -> None:
    response = client.get("/api/v1/admin/audit/verify", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == code


def test_signature_for_another_path_is_refused(client: TestClient, settings: Settings) -> None:
    signed = client.build_request("GET", "/api/v1/admin/audit/verify?x=1")
    request = next(_auth(settings).auth_flow(signed))
    headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
    response = client.get("/api/v1/admin/audit/verify", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


def test_a_replayed_request_is_refused(client: TestClient, settings: Settings) -> None:
    request = next(_auth(settings).auth_flow(client.build_request("GET", "/api/v1/admin/audit/verify")))
    headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
    assert client.get("/api/v1/admin/audit/verify", headers=headers).status_code == 200
    again = client.get("/api/v1/admin/audit/verify", headers=headers)
    assert again.status_code == 401 and again.json()["code"] == "nonce_reused"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/health", 405, "method_not_allowed"),
        ("POST", "/ready", 405, "method_not_allowed"),
        ("POST", "/api/v1/admin/audit/verify", 405, "method_not_allowed"),
        ("GET", "/api/v1/nothing", 404, "not_found"),
    ],
)
def test_wrong_method_or_route_is_4xx_problem(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path, content=b"{")
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_oversize_body_is_413_on_every_route(client: TestClient) -> None:
    response = client.post("/health", content=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
