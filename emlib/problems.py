"""RFC 9457 problem+json errors, mapped in one place per app.

Expected outcomes (insufficient funds, market closed, a bad signature) are raised as
`ProblemError` with a stable snake_case `code`; `install_problem_handlers` maps them,
request-validation failures, malformed JSON, oversize bodies and unknown routes to
`application/problem+json`. An unexpected exception becomes a 500 `internal_error` whose
body says nothing about the cause (the log has it, under the request id).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://everything.market/problems/"

_log = logging.getLogger("emlib.problems")


class ProblemError(Exception):
    """An expected failure with a stable code, answered as problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str = "",
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.code, self.detail, title=self.title, **self.extra)


def problem_body(
    status: int, code: str, detail: str = "", *, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return body


def problem_response(
    status: int, code: str, detail: str = "", *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, detail, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


# Pydantic error types → our stable codes. Anything unlisted is `validation_error`.
_VALIDATION_CODES = {
    "json_invalid": "malformed_json",
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "enum": "invalid_enum",
    "literal_error": "invalid_enum",
}

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def _validation_problem(exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "type": e.get("type", ""), "msg": e.get("msg", "")}
        for e in exc.errors()
    ]
    first = errors[0]["type"] if errors else ""
    code = _VALIDATION_CODES.get(first, "validation_error")
    status = 400 if code == "malformed_json" else 422
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem_response(status, code, detail, errors=errors[:20])


def install_problem_handlers(app: FastAPI, *, max_body_bytes: int) -> None:
    """Map every error this app can raise to problem+json, and cap request bodies."""

    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return JSONResponse(exc.body(), status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_problem(exc)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else ""
        return problem_response(exc.status_code, code, detail, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal_error", "unexpected server error")

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)


class BodyLimitMiddleware:
    """Answers 413 `payload_too_large` before reading more than `max_body_bytes`, and 400
    `nul_character` for a NUL in the path or query, or a `\\u0000` escape in a JSON body (a raw
    NUL in JSON is already malformed JSON).

    Checks Content-Length up front and counts streamed chunks, so a chunked upload
    cannot slip past the limit either.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        target = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string", b""))
        if _has_nul(target):
            await _nul_refused()(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await problem_response(400, "bad_request", "invalid Content-Length")(scope, receive, send)
                    return
                if declared > limit:
                    await _too_large(limit)(scope, receive, send)
                    return
        # Read the whole body up front (it is bounded), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"\\u0000" in body and _is_json(scope):
            await _nul_refused()(scope, receive, send)
            return
        scope.setdefault("state", {})["raw_body"] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = bytes(value).split(b";")[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _has_nul(target: bytes) -> bool:
    return b"\x00" in target or b"%00" in target.lower()


def _nul_refused() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    # No text we store or compare may hold NUL (PostgreSQL text cannot): refuse it at the edge.
    return problem_response(
        400, "nul_character", "NUL characters are not accepted in paths, queries or bodies"
    )


def _too_large(limit: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    return problem_response(413, "payload_too_large", f"request body exceeds {limit} bytes")
