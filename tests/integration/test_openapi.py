"""The committed OpenAPI document equals the one the app generates, and documents errors.

`docs/specs/openapi.json` is what clients read; a route changed without regenerating it
fails here with the command to run.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emlib.problems import PROBLEM_JSON
from emlib.settings import Settings
from functions.app import create_app
from functions.openapi import OPENAPI_PATH, REGENERATE_COMMAND, generate_document, render

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return generate_document()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_committed_document_is_current(document: dict[str, Any]) -> None:
    generated = render(document)
    committed = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.exists() else ""
    if generated != committed:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    generated.splitlines(keepends=True),
                    "committed",
                    "generated",
                    n=1,
                )
            )[:60]
        )
        pytest.fail(f"{OPENAPI_PATH} is stale; regenerate it with `{REGENERATE_COMMAND}`\n{diff}")


def test_rendering_is_deterministic(document: dict[str, Any]) -> None:
    again = generate_document()
    assert render(again) == render(document)
    text = render(document)
    assert json.loads(text) == document
    assert text.endswith("}\n")


def test_served_document_is_the_processed_one(document: dict[str, Any]) -> None:
    app = create_app(Settings(APP_ENV="test"))
    try:
        with TestClient(app) as client:
            served = client.get("/openapi.json").json()
    finally:
        app.state.orderbook.close()
        app.state.resources.close()
    assert served == document


def test_every_error_response_is_problem_json(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for method, path, op in operations(document):
        responses = op["responses"]
        assert "default" in responses, (method, path)
        for status, response in responses.items():
            if status == "default" or status[0] in "45":
                assert response["content"] == {PROBLEM_JSON: {"schema": problem_ref}}, (method, path, status)
        # X-TOTP is read by the admin check (401/403), not validated by FastAPI (422)
        params = [p for p in op.get("parameters", []) if p["name"] != "X-TOTP"]
        if params or "requestBody" in op:
            assert "422" in responses, (method, path)
        if "requestBody" in op:
            assert {"400", "413"} <= set(responses), (method, path)


@pytest.mark.parametrize(
    ("method", "path", "statuses", "security"),
    [
        ("post", "/api/v1/order", {"401", "403", "429", "503"}, [{"bearerAuth": []}]),
        ("get", "/api/v1/me", {"401"}, [{"bearerAuth": []}]),
        ("post", "/api/v1/auth/login", {"429"}, None),
        ("post", "/api/v1/admin/action", {"401", "403"}, [{"bearerAuth": []}]),
        ("post", "/api/v1/ingest", {"401"}, [{"hmacSignature": []}]),
        ("get", "/api/v1/search", {"422"}, None),
        ("get", "/api/v1/market/{symbol}/snapshot", {"404", "410", "503"}, None),
    ],
)
def test_refusals_follow_the_dependencies(
    document: dict[str, Any], method: str, path: str, statuses: set[str], security: Any
) -> None:
    op = document["paths"][path][method]
    assert statuses <= set(op["responses"])
    assert op.get("security") == security
    if "429" in statuses:
        assert "Retry-After" in op["responses"]["429"]["headers"]


def test_admin_routes_take_the_second_factor(document: dict[str, Any]) -> None:
    op = document["paths"]["/api/v1/admin/action"]["post"]
    (totp,) = [p for p in op["parameters"] if p["name"] == "X-TOTP"]
    assert totp["in"] == "header" and totp["required"] is True
    verify = document["paths"]["/api/v1/admin/audit/verify"]["get"]
    (optional,) = [p for p in verify["parameters"] if p["name"] == "X-TOTP"]
    assert optional["required"] is False  # a signed service call needs none
    anonymous = document["paths"]["/api/v1/search"]["get"]
    assert all(p["name"] != "X-TOTP" for p in anonymous.get("parameters", []))
