"""Structured JSON logs (Powertools Logger) with a request id on every line."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aws_lambda_powertools import Logger
from starlette.requests import Request
from starlette.responses import Response

REQUEST_ID_HEADER = "X-Request-Id"


def get_logger(service: str, level: str = "INFO") -> Logger:
    return Logger(service=service, level=level)


def request_id_middleware(
    logger: Logger,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Take the caller's X-Request-Id (or make one), log with it, echo it back."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isascii() else uuid.uuid4().hex
        request.state.request_id = request_id
        logger.append_keys(request_id=request_id)
        try:
            response = await call_next(request)
        finally:
            logger.remove_keys(["request_id"])
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    return middleware
