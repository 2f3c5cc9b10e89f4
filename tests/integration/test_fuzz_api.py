"""Fuzz every operation of the functions API from its own OpenAPI document (schemathesis).

The app runs against real PostgreSQL and a real orderbook host process. Requests carry a
real session (a user registered and logged in through the API) and, on signed routes, a
real HMAC signature, so the fuzzer gets past authentication into the handlers. Every
response must be no 5xx, a documented status with a documented content type, and a body
matching the documented schema (problem+json on errors).

Each operation gets `FUZZ_MAX_EXAMPLES` positive and as many negative (schema-violating)
cases, derandomized so a failure repeats; a bigger run for a bench or a hunt:

    FUZZ_MAX_EXAMPLES=200 .venv/bin/pytest tests/integration/test_fuzz_api.py

A failure lists, per operation, the first failing request as a curl command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from emlib.signing_http import HmacAuth
from tests.support.functions_stack import FunctionsStack, make_settings
from tests.support.host_process import TEST_HMAC_KEY, HostProcess

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "6"))
BASE_URL = "http://testserver"
SYMBOL = "FUZZ-CPI"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def register_and_login(client: TestClient, username: str) -> str:
    password = "fuzz-password-123456"
    registered = client.post("/api/v1/auth/register", json={"username": username, "password": password})
    assert registered.status_code == 201, registered.text
    login = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    token: str = login.json()["access_token"]
    return token


def send(client: TestClient, case: Case[Any], headers: dict[str, str], signed: bool) -> httpx.Response:
    """Send the case through the app's own test client (HMAC-signed when `signed`)."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        body["content"] = data.encode() if isinstance(data, str) else data
    auth = HmacAuth(TEST_HMAC_KEY.id, TEST_HMAC_KEY.secret) if signed else None
    response: httpx.Response = client.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params") or None,
        headers=kwargs.get("headers") or None,
        auth=auth,
        **body,
    )
    return response


def fuzz_operation(
    client: TestClient,
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    signed: bool,
    failures: dict[str, str],
) -> int:
    """Run up to MAX_EXAMPLES cases; record the first failure per operation. Returns cases sent."""
    sent = 0
    path_parameters = (
        {"symbol": SYMBOL} if mode is GenerationMode.POSITIVE and "{symbol}" in operation.path else None
    )
    strategy = operation.as_strategy(generation_mode=mode, headers=headers, path_parameters=path_parameters)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Any]) -> None:
        nonlocal sent
        key = f"{operation.method.upper()} {operation.path} ({mode.value})"
        if key in failures:
            return
        try:
            response = send(client, case, headers, signed)
        except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
            return  # the client cannot even encode this request (e.g. a control character in a header)
        sent += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Failure, FailureGroup) as exc:  # FailureGroup is a BaseExceptionGroup
            failures[key] = (
                f"{type(exc).__name__}: {exc}\n"
                f"  -> {response.status_code} {response.headers.get('content-type')} {response.text[:300]}\n"
                f"  repro: {case.as_curl_command()}"
            )

    try:
        run()
    except Unsatisfiable:
        # Nothing to violate (no parameters, no body): only the negative mode can get here.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


@pytest.fixture
def fuzz_stack(db_url: str, tmp_path: Path) -> Iterator[FunctionsStack]:
    """The `stack` of tests/support/functions_stack.py, with two differences: order-entry
    buckets large enough that the fuzzer reaches the order handlers instead of 429, and a
    client that answers server exceptions (500) like production instead of re-raising
    them, so a bug shows up as a 5xx the checks report with its request."""
    from functions.app import create_app

    host = HostProcess(tmp_path / "host")
    host.start()
    try:
        settings = make_settings(
            db_url,
            tmp_path / "functions",
            host,
            RATE_LIMIT_ORDER_ACCOUNT_BURST=100_000,
            RATE_LIMIT_ORDER_IP_BURST=100_000,
        )
        app = create_app(settings)
        with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
            yield FunctionsStack(settings, host, client)
        app.state.orderbook.close()
        app.state.resources.close()
    finally:
        host.stop()


def test_fuzz_every_operation(fuzz_stack: FunctionsStack) -> None:
    stack = fuzz_stack
    token = register_and_login(stack.client, "fuzzer")
    app: Any = stack.client.app
    app.state.orderbook.create_market(
        {
            "symbol": SYMBOL,
            "kind": "binary",
            "tick_size": 1,
            "price_min": 1,
            "price_max": 99,
            "multiplier_minor": 100,
            "allow_short": True,
            "status": "open",
        }
    )
    document = stack.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    failures: dict[str, str] = {}
    sent = 0
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document is valid OpenAPI
        operation = result.ok()
        operations += 1
        security = {name for req in operation.definition.raw.get("security", []) for name in req}
        # A signed route with a session would take the session path (audit verify): sign instead.
        signed = "hmacSignature" in security
        headers = {} if signed else {"Authorization": f"Bearer {token}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            sent += fuzz_operation(stack.client, operation, mode, headers, signed, failures)
    assert operations == len([1 for item in document["paths"].values() for _ in item])
    assert sent >= operations, "the fuzzer sent almost nothing"
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(
        f"{key}\n{text}" for key, text in sorted(failures.items())
    )
