"""Every kind of bad input answers 4xx problem+json with a stable code, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from emlib.problems import PROBLEM_JSON, ProblemError, install_problem_handlers

LIMIT = 2048


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    quantity: StrictInt = Field(ge=1)
    side: Literal["buy", "sell"]


writes: list[Body] = []


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app, max_body_bytes=LIMIT)

    @app.post("/things", status_code=201)
    def create(body: Body) -> dict[str, str]:
        writes.append(body)
        return {"ok": "yes"}

    @app.get("/expected")
    def expected() -> None:
        raise ProblemError(409, "market_not_open", "halted", headers={"Retry-After": "3"})

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    writes.clear()
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        yield c


def assert_problem(response: object, status: int, code: str) -> None:
    from httpx import Response

    assert isinstance(response, Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "code"}
    assert body["type"].endswith("/" + code)


GOOD = {"name": "x", "quantity": 1, "side": "buy"}


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"name": "x", "quantity": ', 400, "malformed_json"),
        (b"not json at all", 400, "malformed_json"),
        (b'{"name": "x", "quantity": "1", "side": "buy"}', 422, "validation_error"),
        (b'{"name": "x", "quantity": 1.5, "side": "buy"}', 422, "validation_error"),
        (b'{"name": "x", "quantity": 0, "side": "buy"}', 422, "validation_error"),
        (b'{"name": "x", "quantity": -3, "side": "buy"}', 422, "validation_error"),
        (b'{"name": "x", "quantity": 1, "side": "hold"}', 422, "invalid_enum"),
        (b'{"name": "x", "quantity": 1, "side": "buy", "extra": 1}', 422, "unknown_field"),
        (b'{"quantity": 1, "side": "buy"}', 422, "missing_field"),
        (b"[]", 422, "validation_error"),
    ],
)
def test_bad_bodies_get_4xx_with_code_and_write_nothing(
    client: TestClient, raw: bytes, status: int, code: str
) -> None:
    response = client.post("/things", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, status, code)
    assert writes == []


def test_good_body_is_written_once(client: TestClient) -> None:
    assert client.post("/things", json=GOOD).status_code == 201
    assert len(writes) == 1


def test_oversize_body_by_content_length_is_413(client: TestClient) -> None:
    raw = b'{"name": "' + b"x" * LIMIT + b'", "quantity": 1, "side": "buy"}'
    response = client.post("/things", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 413, "payload_too_large")
    assert writes == []


def test_oversize_chunked_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 512

    response = client.post("/things", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert writes == []


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_problem(client.get("/nowhere"), 404, "not_found")
    assert_problem(client.delete("/things"), 405, "method_not_allowed")


def test_expected_failure_keeps_its_code_and_headers(client: TestClient) -> None:
    response = client.get("/expected")
    assert_problem(response, 409, "market_not_open")
    assert response.headers["retry-after"] == "3"


def test_unexpected_error_is_500_without_internals(client: TestClient) -> None:
    response = client.get("/boom")
    assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.post(
            "/things",
            content=b'{"name": "a\\u0000b", "quantity": 1, "side": "buy"}',
            headers={"content-type": "application/json"},
        ),
        lambda c: c.get("/expected?q=%00"),
        lambda c: c.get("/expected%00"),
    ],
)
def test_nul_characters_are_refused_at_the_edge(client: TestClient, send: Any) -> None:
    assert_problem(send(client), 400, "nul_character")
    assert writes == []


def test_a_raw_nul_in_json_is_malformed_json(client: TestClient) -> None:
    raw = b'{"name": "a\x00b", "quantity": 1, "side": "buy"}'
    response = client.post("/things", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 400, "malformed_json")
    assert writes == []
