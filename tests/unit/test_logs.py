"""Every service logs JSON lines that carry the request id the caller sees."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from emlib.service import create_service_app
from emlib.settings import Settings


def test_request_id_is_echoed_and_logged(capsys: pytest.CaptureFixture[str]) -> None:
    app = create_service_app("svc", Settings(APP_ENV="test"))

    @app.get("/work")
    def work() -> dict[str, str]:
        app.state.logger.info("did the work")
        return {"ok": "yes"}

    with TestClient(app) as client:
        given = client.get("/work", headers={"X-Request-Id": "req-123"})
        made = client.get("/work")
    assert given.headers["x-request-id"] == "req-123"
    generated = made.headers["x-request-id"]
    assert len(generated) == 32 and generated != "req-123"

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    work_lines = [line for line in lines if line.get("message") == "did the work"]
    assert [line["request_id"] for line in work_lines] == ["req-123", generated]
    assert all(line["service"] == "svc" and line["level"] == "INFO" for line in work_lines)


def test_an_oversized_request_id_is_replaced() -> None:
    app = create_service_app("svc", Settings(APP_ENV="test"))
    with TestClient(app) as client:
        response = client.get("/health", headers={"X-Request-Id": "x" * 500})
    assert response.headers["x-request-id"] != "x" * 500
