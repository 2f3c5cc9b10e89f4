"""The Lambda entry point answers canned API Gateway HTTP API (v2) events.

Each `tests/events/*.json` file is an event as API Gateway sends it. The handler is
imported fresh, after the environment is set, as a Lambda cold start would do it.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

import functions
from emlib.settings import get_settings
from infra.validate import TEMPLATE_PATH, load_template
from tests.integration.test_search import add_market

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
PROBLEM_JSON = "application/problem+json"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class FakeLambdaContext:
    """The attributes Lambda's context object has that Mangum and Powertools read."""

    function_name: str = "FunctionsApi"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:FunctionsApi"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
    log_group_name: str = "/aws/lambda/FunctionsApi"
    log_stream_name: str = "2026/11/22/[$LATEST]0123456789abcdef"
    remaining_ms: int = 29_000
    identity: Any = None
    client_context: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    return event


def _cold_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[Handler]:
    """Import functions.handler fresh under `env`; put the previous modules back after."""
    for name in ("APP_ENV", "DATABASE_URL", "DATA_DIR", "OBJECT_STORE_URL", "MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    for module in ("functions.handler", "functions.app"):
        if module in sys.modules:
            monkeypatch.delitem(sys.modules, module)
        attr = module.rsplit(".", 1)[1]
        if hasattr(functions, attr):
            monkeypatch.delattr(functions, attr)
    handler_module = importlib.import_module("functions.handler")
    try:
        yield handler_module.handler
    finally:
        sys.modules["functions.app"].app.state.resources.close()
        # monkeypatch restores any modules that were there before; drop ours if none were
        sys.modules.pop("functions.handler", None)
        sys.modules.pop("functions.app", None)
        get_settings.cache_clear()


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[Handler]:
    yield from _cold_start(
        monkeypatch,
        {"APP_ENV": "test", "DATABASE_URL": db_url, "DATA_DIR": str(tmp_path), "MAX_BODY_BYTES": "1024"},
    )


@pytest.fixture
def handler_broken_store(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[Handler]:
    # The object store folder would sit under a regular file, so it can never be created.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    yield from _cold_start(
        monkeypatch,
        {
            "APP_ENV": "test",
            "DATABASE_URL": db_url,
            "DATA_DIR": str(tmp_path),
            "OBJECT_STORE_URL": f"file://{blocker}/objects",
        },
    )


def invoke(handler: Handler, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    response = handler(event, FakeLambdaContext())
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8")
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    parsed = json.loads(body) if body else None
    return response["statusCode"], headers, parsed


def assert_problem(headers: dict[str, str], body: Any, status: int, code: str) -> None:
    assert headers["content-type"] == PROBLEM_JSON
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)


def test_events_are_api_gateway_v2_shaped() -> None:
    names = sorted(p.name for p in EVENTS_DIR.glob("*.json"))
    assert {
        "health.json",
        "ready.json",
        "not_found.json",
        "base64_body.json",
        "login_malformed_json.json",
        "search_query.json",
    } <= set(names)
    for name in names:
        event = load_event(name)
        assert event["version"] == "2.0"
        assert event["rawPath"] == event["requestContext"]["http"]["path"]
        assert event["routeKey"] == event["requestContext"]["routeKey"]
        assert isinstance(event["isBase64Encoded"], bool)
        assert event["requestContext"]["http"]["sourceIp"]
        assert event["requestContext"]["requestId"]
        if event["requestContext"]["http"]["method"] == "GET":
            assert "body" not in event, "API Gateway sends no body with a GET"
        query = event.get("queryStringParameters")
        assert (query is None) == (event["rawQueryString"] == ""), name
        if query is not None:
            assert dict(parse_qsl(event["rawQueryString"])) == query, name


def test_event_route_keys_are_template_routes() -> None:
    """An event names the route API Gateway matched: an explicit one must be in the template."""
    events = load_template(TEMPLATE_PATH)["Resources"]["FunctionsApi"]["Properties"]["Events"]
    route_keys = {f"{e['Properties']['Method'].upper()} {e['Properties']['Path']}" for e in events.values()}
    for path in sorted(EVENTS_DIR.glob("*.json")):
        event = load_event(path.name)
        assert event["routeKey"] in route_keys, (path.name, event["routeKey"])
        method, _, route_path = event["routeKey"].partition(" ")
        if route_path != "/{proxy+}":
            assert (method, route_path) == (event["requestContext"]["http"]["method"], event["rawPath"]), (
                path.name
            )


def test_health(handler: Handler) -> None:
    status, headers, body = invoke(handler, load_event("health.json"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == {"status": "ok", "service": "functions"}
    assert headers["x-request-id"]


def test_ready_with_database(handler: Handler) -> None:
    status, _, body = invoke(handler, load_event("ready.json"))
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"


def test_ready_with_a_broken_dependency_is_problem(handler_broken_store: Handler) -> None:
    status, headers, body = invoke(handler_broken_store, load_event("ready.json"))
    assert status == 503
    assert_problem(headers, body, 503, "not_ready")
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["object_store"].startswith("error")


def test_unknown_route_is_problem(handler: Handler) -> None:
    status, headers, body = invoke(handler, load_event("not_found.json"))
    assert status == 404
    assert_problem(headers, body, 404, "not_found")


def test_base64_body_is_decoded(handler: Handler) -> None:
    event = load_event("base64_body.json")
    assert event["isBase64Encoded"] is True
    raw = base64.b64decode(event["body"])
    # MAX_BODY_BYTES is 1024 here: the encoded body is over it and the decoded one under,
    # so reaching the router (405: /health is GET-only) proves Mangum decoded it first.
    assert len(raw) <= 1024 < len(event["body"])
    assert int(event["headers"]["content-length"]) == len(raw)
    status, headers, body = invoke(handler, event)
    assert status == 405, body
    assert_problem(headers, body, 405, "method_not_allowed")


def test_oversize_body_is_problem(handler: Handler) -> None:
    event = load_event("base64_body.json")
    raw = b"x" * 2000
    event["body"] = base64.b64encode(raw).decode("ascii")
    event["headers"]["content-length"] = str(len(raw))
    status, headers, body = invoke(handler, event)
    assert status == 413
    assert_problem(headers, body, 413, "payload_too_large")


def test_malformed_json_body_is_400_problem(handler: Handler) -> None:
    event = load_event("login_malformed_json.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(event["body"])
    status, headers, body = invoke(handler, event)
    assert status == 400, body
    assert_problem(headers, body, 400, "malformed_json")
    assert headers["x-request-id"]


def test_query_string_reaches_the_route(handler: Handler) -> None:
    """GET /api/v1/search?q=cpi&sort=recency answers from the real database: the market whose
    title matches is found, the other is not (so the query string was read, not dropped)."""
    resources = sys.modules["functions.app"].app.state.resources
    add_market(resources, "US-CPI-3", "US CPI above 3% in December", description="consumer prices")
    add_market(resources, "MARS-LAND", "A crewed Mars landing before 2030")
    event = load_event("search_query.json")
    assert event["rawQueryString"] == "q=cpi&sort=recency"
    status, headers, body = invoke(handler, event)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert [item["symbol"] for item in body["items"]] == ["US-CPI-3"]

    # An unknown sort word is refused by name, proving `sort` is parsed from the event.
    bad = load_event("search_query.json")
    bad["rawQueryString"] = "q=cpi&sort=loudest"
    bad["queryStringParameters"] = {"q": "cpi", "sort": "loudest"}
    status, headers, body = invoke(handler, bad)
    assert status == 422, body
    assert headers["content-type"] == PROBLEM_JSON
    assert any("sort" in error["loc"] for error in body["errors"]), body
