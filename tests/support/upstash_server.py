"""A local server that speaks the Upstash Redis REST protocol, on top of a real redis-server.

What the `upstash-redis` client sends and expects (read from its source, v1.8):
`POST {url}` with a JSON array command (`["SET", "k", "v", "EX", 10]`), `POST {url}/pipeline`
and `POST {url}/multi-exec` with an array of such arrays; `Authorization: Bearer <token>`;
`Upstash-Encoding: base64` by default. A reply is `{"result": ...}` or `{"error": "..."}`
(an array of those for pipeline and multi-exec). Under base64 encoding every string result
is base64 except the status reply "OK", which the client special-cases; integers, nulls and
arrays (recursively) travel as JSON.

Commands go through redis-py with its response callbacks removed, so the server relays
Redis's raw replies the way Upstash does. Served by `ThreadingHTTPServer` on 127.0.0.1 at
a free port.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.redis_server import RedisServer

Command = list[str | int | float]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 resets a burst of concurrent clients


class UpstashServer:
    def __init__(self, redis_socket: Path, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.redis = redis.Redis(unix_socket_path=str(redis_socket), protocol=2)
        self.redis.response_callbacks.clear()  # relay raw replies, as Upstash does
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="upstash-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> UpstashServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
        self.redis.close()

    def flush(self) -> None:
        self._execute("FLUSHALL")

    def _execute(self, *command: Any) -> Any:
        return self.redis.execute_command(*command)  # type: ignore[no-untyped-call]

    # --- protocol -------------------------------------------------------------------------

    def encode(self, value: Any, base64_encoding: bool) -> Any:
        if isinstance(value, bytes):
            if not base64_encoding:
                return value.decode("utf-8", errors="replace")
            return "OK" if value == b"OK" else base64.b64encode(value).decode("ascii")
        if isinstance(value, list):
            return [self.encode(item, base64_encoding) for item in value]
        return value  # int or None

    def run(self, command: Any, base64_encoding: bool) -> dict[str, Any]:
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(arg, str | int | float) and not isinstance(arg, bool) for arg in command)
        ):
            return {"error": "ERR a command is a non-empty JSON array of strings and numbers"}
        try:
            return {"result": self.encode(self._execute(*command), base64_encoding)}
        except redis.ResponseError as exc:
            return {"error": str(exc)}

    def run_transaction(self, commands: list[Any], base64_encoding: bool) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        replies = pipe.execute(raise_on_error=False)
        return [
            {"error": str(reply)}
            if isinstance(reply, Exception)
            else {"result": self.encode(reply, base64_encoding)}
            for reply in replies
        ]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers then body wait on delayed ACKs (~40 ms)

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self.reply(HTTPStatus.UNAUTHORIZED, {"error": "Unauthorized"})
                    return
                b64 = (self.headers.get("Upstash-Encoding") or "").lower() == "base64"
                try:
                    payload = json.loads(raw)
                except ValueError:
                    self.reply(HTTPStatus.BAD_REQUEST, {"error": "ERR failed to parse command"})
                    return
                path = self.path.rstrip("/")
                if path == "":
                    result = server.run(payload, b64)
                    self.reply(HTTPStatus.BAD_REQUEST if "error" in result else HTTPStatus.OK, result)
                elif path in ("/pipeline", "/multi-exec"):
                    if not isinstance(payload, list) or not all(isinstance(c, list) and c for c in payload):
                        self.reply(HTTPStatus.BAD_REQUEST, {"error": "ERR expected an array of commands"})
                    elif path == "/pipeline":
                        self.reply(HTTPStatus.OK, [server.run(c, b64) for c in payload])
                    else:
                        self.reply(HTTPStatus.OK, server.run_transaction(payload, b64))
                else:
                    self.reply(HTTPStatus.NOT_FOUND, {"error": "ERR unknown endpoint"})

        return Handler


@pytest.fixture(scope="session", name="upstash_server")
def upstash_server_fixture(redis_server: RedisServer) -> Iterator[UpstashServer]:
    """Import this into a test module (with `redis_server_fixture`) to use `upstash_server`."""
    server = UpstashServer(redis_server.socket_path).start()
    yield server
    server.stop()
