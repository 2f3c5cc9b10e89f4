"""Structured JSON logs (Powertools Logger) with a request id on every line."""

from __future__ import annotations

import uuid

from aws_lambda_powertools import Logger
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-Id"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()


def get_logger(service: str, level: str = "INFO") -> Logger:
    return Logger(service=service, level=level)


def pick_request_id(incoming: str) -> str:
    """The caller's id if it is short printable ASCII, else a fresh one."""
    return incoming if 0 < len(incoming) <= 128 and incoming.isascii() else uuid.uuid4().hex


class RequestIdMiddleware:
    """Take the caller's X-Request-Id (or make one), log with it, echo it back.

    Plain ASGI rather than `@app.middleware("http")`: the `call_next` style runs each request
    through an extra task and memory streams, which cost more host CPU per request than the
    orderbook's own work. Install with `app.add_middleware(RequestIdMiddleware, logger=...)`.
    """

    def __init__(self, app: ASGIApp, logger: Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == _HEADER_KEY:
                incoming = value.decode("latin-1")
                break
        request_id = pick_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id  # request.state.request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        self.logger.append_keys(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.logger.remove_keys(["request_id"])
