"""The functions API's OpenAPI document: generated from the app, committed, kept honest.

FastAPI documents only the happy path plus a 422 in *its* validation-error shape
(`HTTPValidationError`, `application/json`), but every error this app answers is RFC 9457
`application/problem+json` (emlib/problems.py). Rather than asking every router to repeat
`responses=`, `with_problem_responses` post-processes the generated document in one place:

- a `ProblemDetails` schema, and `default` = problem+json on every operation;
- 422 (validation) on operations with parameters or a body; 400 (`malformed_json`) and 413
  (`payload_too_large`) on operations with a body;
- 401 / 403 / 429 / 503 where the route's dependencies can refuse that way (a session, a
  role or admin second factor, a rate limit, the orderbook host), found by walking each
  route's dependency tree;
- security schemes (`bearerAuth` JWT, `hmacSignature`) and the `X-TOTP` header on admin
  routes;
- any response a router declared with a description only gets the problem+json body.

`install(app)` makes `app.openapi()` (and so `/openapi.json`) return the processed document.
The committed copy is `docs/specs/openapi.json`; regenerate it with

    .venv/bin/python -m functions.openapi --write

and `tests/integration/test_openapi.py` fails while it is stale.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from emlib.problems import PROBLEM_JSON, PROBLEM_TYPE_BASE

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "docs" / "specs" / "openapi.json"
REGENERATE_COMMAND = ".venv/bin/python -m functions.openapi --write"

PROBLEM_SCHEMA_NAME = "ProblemDetails"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM_SCHEMA_NAME,
    "description": (
        "RFC 9457 problem details. `code` is the stable snake_case reason to switch on; "
        f"`type` is `{PROBLEM_TYPE_BASE}` + code. Extra members may appear (`errors` on "
        "validation failures, `checks` on /ready). Codes: docs/specs/errors.md and the spec "
        "of each route family."
    ),
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "type": {"type": "string"},
                    "msg": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A session from POST /api/v1/auth/login (docs/specs/auth.md).",
    },
    "hmacSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": (
            "Service-to-service HMAC: X-Key-Id, X-Timestamp, X-Nonce and X-Signature together "
            "(docs/specs/hmac.md)."
        ),
    },
}

TOTP_PARAMETER: dict[str, Any] = {
    "name": "X-TOTP",
    "in": "header",
    "required": True,
    "description": "The admin's current TOTP code (second factor; docs/specs/auth.md).",
    "schema": {"type": "string", "pattern": "^[0-9]{6}$"},
}

# Why a dependency can refuse: status -> description of the problem codes it answers.
_REFUSALS: dict[int, str] = {
    400: "malformed_json (the body is not JSON), or a bad cursor",
    401: "not authenticated: no, expired or forged session, or a bad HMAC signature",
    403: "forbidden: the role is too low, or the admin second factor (X-TOTP) is refused",
    413: "payload_too_large: the body exceeds MAX_BODY_BYTES",
    422: "validation_error / missing_field / unknown_field / invalid_enum, or a domain refusal",
    429: "rate_limited: wait Retry-After seconds",
    503: "a dependency (orderbook host, database, JWKS) is unavailable",
}
_DEFAULT_DESCRIPTION = "Any other failure, as problem+json (docs/specs/errors.md)."
_METHODS = ("get", "put", "post", "delete", "patch")


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA_NAME}"}}}


def _walk(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _walk(sub)


def _traits(route: APIRoute) -> set[str]:
    """What the route's dependencies make it able to refuse."""
    traits: set[str] = set()
    for call in _walk(route.dependant):
        module = getattr(call, "__module__", "")
        qualname = getattr(call, "__qualname__", "")
        if module == "functions.auth" and qualname == "get_current_user":
            traits.add("session")
        elif module == "functions.auth" and qualname.startswith(("require_role.", "require_admin.")):
            traits.add("role")
            if qualname.startswith("require_admin."):
                traits.add("admin")
        elif qualname in ("signed_caller", "signed_or_admin"):
            traits.add("signed")
            if qualname == "signed_or_admin":
                traits.update({"session", "role", "admin_optional"})
        elif "limit_by" in qualname:
            traits.add("rate_limited")
        elif module == "functions.deps" and qualname == "get_orderbook":
            traits.add("orderbook")
    return traits


def _route_traits(app: FastAPI) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        traits = _traits(route)
        for method in route.methods or ():
            out[(method.lower(), ctx.path_format or route.path_format)] = traits
    return out


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def with_problem_responses(document: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """A copy of FastAPI's `document` with problem+json errors and security documented."""
    doc = copy.deepcopy(document)
    traits_by_op = _route_traits(app)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[PROBLEM_SCHEMA_NAME] = PROBLEM_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            traits = traits_by_op.get((method, path), set())
            responses: dict[str, Any] = op.setdefault("responses", {})
            statuses: set[int] = set()
            if op.get("parameters") or "requestBody" in op:
                statuses.add(422)
            if "requestBody" in op:
                statuses.update({400, 413})
            if traits & {"session", "signed"}:
                statuses.add(401)
            if "role" in traits:
                statuses.add(403)
            if "rate_limited" in traits:
                statuses.add(429)
            if "orderbook" in traits:
                statuses.add(503)
            for status in sorted(statuses):
                existing = responses.get(str(status))
                if existing is None or _is_fastapi_validation(existing):
                    responses[str(status)] = {"description": _REFUSALS[status], "content": _problem_content()}
            if "429" in responses:
                responses["429"]["headers"] = {
                    "Retry-After": {
                        "description": "whole seconds until the bucket has a token again",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                }
            # Declared error responses without a body (e.g. `responses={404: {...}}`).
            for key, response in responses.items():
                if key[0] in "45" and "content" not in response:
                    response["content"] = _problem_content()
            responses["default"] = {"description": _DEFAULT_DESCRIPTION, "content": _problem_content()}
            security: list[dict[str, list[str]]] = []
            if "session" in traits:
                security.append({"bearerAuth": []})
            if "signed" in traits:
                security.append({"hmacSignature": []})
            if security:
                op["security"] = security
            if traits & {"admin", "admin_optional"}:
                params: list[dict[str, Any]] = op.setdefault("parameters", [])
                if not any(p.get("name") == TOTP_PARAMETER["name"] for p in params):
                    # signed_or_admin wants it only with a session, not with a signature
                    params.append(dict(TOTP_PARAMETER, required="admin" in traits))
    if not _uses_ref(doc, "/HTTPValidationError"):
        schemas.pop("HTTPValidationError", None)
        if not _uses_ref(doc, "/ValidationError"):
            schemas.pop("ValidationError", None)
    return doc


def _uses_ref(doc: dict[str, Any], suffix: str) -> bool:
    return f'{suffix}"' in json.dumps(doc)


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and `/openapi.json`) answer the post-processed document."""
    generate = app.openapi  # FastAPI's own, cached while the routes do not change
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        raw = generate()
        if cache.get("raw") is not raw:
            cache["doc"] = with_problem_responses(raw, app)
            cache["raw"] = raw
        doc: dict[str, Any] = cache["doc"]
        return doc

    setattr(app, "openapi", openapi)  # noqa: B010 (mypy refuses assigning to a method)


def render(document: dict[str, Any]) -> str:
    """The canonical text: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def generate_document() -> dict[str, Any]:
    """The document of an app built from fixed test settings (nothing connects)."""
    from emlib.settings import Settings
    from functions.app import create_app

    app = create_app(Settings(APP_ENV="test"))
    try:
        return app.openapi()
    finally:
        app.state.orderbook.close()
        app.state.resources.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"write {OPENAPI_PATH.name} instead of printing")
    args = parser.parse_args(argv)
    text = render(generate_document())
    if args.write:
        OPENAPI_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {OPENAPI_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
