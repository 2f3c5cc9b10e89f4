"""`POST /api/v1/ingest` as contract.md says: signed, idempotent by key, bounded, http(s) only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from emlib.settings import Settings
from emlib.signing_http import HmacAuth
from functions.app import create_app
from functions.routers.ingest import _is_internal


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(APP_ENV="test", DATABASE_URL=db_url, DATA_DIR=str(tmp_path))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    key = settings.hmac_keys[-1]
    with TestClient(app) as c:
        c.auth = HmacAuth(key.id, key.secret)
        yield c
    app.state.resources.close()


def _jobs(db_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, idempotency_key FROM jobs").fetchall()]


BODY = {"url": "https://example.org/cpi", "idempotency_key": "k-1", "metadata": {"market": "US-CPI"}}


def test_new_then_same_then_different(client: TestClient, db_url: str) -> None:
    first = client.post("/api/v1/ingest", json=BODY)
    assert first.status_code == 202, first.text
    job = first.json()
    assert job["status"] == "queued" and job["idempotency_key"] == "k-1"
    # the same body with keys in another order is the same request
    reordered = json.dumps(dict(reversed(BODY.items()))).encode()
    again = client.post("/api/v1/ingest", content=reordered, headers={"content-type": "application/json"})
    assert again.status_code == 200 and again.json()["job_id"] == job["job_id"]
    other = client.post("/api/v1/ingest", json={**BODY, "url": "https://example.org/other"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    assert _jobs(db_url) == [(job["job_id"], "k-1")]


def test_concurrent_duplicates_make_one_job(client: TestClient, db_url: str) -> None:
    codes: list[int] = []

    def send() -> None:
        codes.append(client.post("/api/v1/ingest", json={**BODY, "idempotency_key": "race"}).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 7 + [202]
    assert len(_jobs(db_url)) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**BODY, "url": "ftp://example.org/x"}, 422, "validation_error"),
        ({**BODY, "url": "file:///etc/passwd"}, 422, "validation_error"),
        ({**BODY, "url": "not a url at all"}, 422, "validation_error"),
        ({**BODY, "idempotency_key": ""}, 422, "validation_error"),
        ({**BODY, "idempotency_key": "spaces are bad"}, 422, "validation_error"),
        ({**BODY, "metadata": "text"}, 422, "validation_error"),
        ({**BODY, "extra": 1}, 422, "unknown_field"),
        ({"url": "https://example.org"}, 422, "missing_field"),
    ],
)
def test_bad_bodies_write_nothing(
    client: TestClient, db_url: str, body: dict[str, object], status: int, code: str
) -> None:
    response = client.post("/api/v1/ingest", json=body)
    assert response.status_code == status and response.json()["code"] == code
    assert _jobs(db_url) == []


def test_oversize_and_malformed_bodies(client: TestClient, db_url: str) -> None:
    big = {**BODY, "metadata": {"blob": "x" * (10 * 1024 * 1024)}}
    assert client.post("/api/v1/ingest", json=big).json()["code"] == "payload_too_large"
    malformed = client.post(
        "/api/v1/ingest", content=b'{"url": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["code"] == "malformed_json"
    assert _jobs(db_url) == []


def test_unsigned_is_refused(settings: Settings, db_url: str) -> None:
    app = create_app(settings)
    with TestClient(app) as c:
        response = c.post("/api/v1/ingest", json=BODY)
    app.state.resources.close()
    assert response.status_code == 401 and response.json()["code"] == "signature_missing"
    assert _jobs(db_url) == []


def test_production_refuses_internal_targets(db_url: str, tmp_path: Path) -> None:
    production = Settings.model_validate(
        {
            "APP_ENV": "production",
            "DATABASE_URL": db_url,
            "DATA_DIR": str(tmp_path),
            "JWT_SECRET": "j" * 40,
            "AUDIT_HMAC_KEY": "a" * 40,
            "HMAC_KEYS": json.dumps([{"id": "p1", "secret": "s" * 40}]),
        }
    )
    app = create_app(production)
    with TestClient(app) as c:
        c.auth = HmacAuth("p1", "s" * 40)
        for url in (
            "http://127.0.0.1:8100/x",
            "http://localhost/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/",
        ):
            response = c.post("/api/v1/ingest", json={**BODY, "url": url, "idempotency_key": "p"})
            assert response.status_code == 422 and response.json()["code"] == "forbidden_target", url
    app.state.resources.close()
    assert _jobs(db_url) == []


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("192.168.1.1", True),
        ("169.254.1.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1::1", False),
    ],
)
def test_internal_address_classes(address: str, internal: bool) -> None:
    assert _is_internal(address) is internal
