"""HMAC request signing at the HTTP edges: a FastAPI dependency, and httpx/requests auth.

Both sides sign or verify the bytes that actually travel, never a re-serialisation:

- the server reads the raw body (`await request.body()`) and the path and query exactly
  as the client sent them (`scope["raw_path"]` + `?` + `scope["query_string"]`);
- the clients sign `request.content` and `request.url.raw_path` (httpx), or the prepared
  body and `path_url` (requests), after the library has encoded them.

Server side, in a service's start-up:

    app.state.signature_check = require_signature(lambda: keyring, NonceStore(kv), time.time)

    @router.post("/api/v1/ingest")
    def ingest(body: IngestRequest, caller: SignedCaller) -> ...:   # caller = key id

`SignedCaller` finds the check on `app.state.signature_check`; a route may also use
`Depends(require_signature(...))` directly. Failures raise `ProblemError(401, code)` with
the codes of `emlib.signing`. Client side:

    httpx.Client(auth=HmacAuth(key_id, secret))
    requests.post(url, data=..., auth=RequestsHmacAuth(key_id, secret))

Where the ASGI server gives no `raw_path` (Mangum behind API Gateway), the path is
re-encoded from the decoded `scope["path"]`; clients that send canonical percent-encoding
(httpx and requests do) sign the same string.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Annotated
from urllib.parse import quote

import httpx
import requests
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from emlib.problems import ProblemError
from emlib.signing import (
    SIGNATURE_INVALID,
    Keyring,
    RememberNonce,
    VerifiedCaller,
    VerifyFailure,
    signed_headers,
    verify,
)

Clock = Callable[[], float]
NonceFactory = Callable[[], str]
SignatureCheck = Callable[[Request], Awaitable[str]]

# RFC 3986 pchar minus percent (re-encoding a decoded path must not double-encode "%")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def new_nonce() -> str:
    """32 characters of [A-Za-z0-9_-] (192 random bits)."""
    return secrets.token_urlsafe(24)


def request_path_with_query(request: Request) -> str:
    """The request target as the client sent it: raw path, then `?query` if any."""
    raw_path = request.scope.get("raw_path")
    path = bytes(raw_path).decode("utf-8") if raw_path else quote(request.scope["path"], safe=_PATH_SAFE)
    query = bytes(request.scope.get("query_string", b"")).decode("utf-8")
    return f"{path}?{query}" if query else path


def require_signature(
    keyring_provider: Callable[[], Keyring],
    nonce_store: RememberNonce,
    clock: Clock = time.time,
    *,
    inline: bool = False,
) -> SignatureCheck:
    """A FastAPI dependency that verifies the request's signature and returns the key id.

    `keyring_provider` is called per request so a reloaded keyring takes effect at once.
    The nonce store may block (PostgreSQL, Upstash), so the check runs in a worker thread;
    with `inline=True` (only for a store that never blocks, e.g. in memory) it runs on the
    event loop instead: an HMAC is microseconds, the thread hop and GIL hand-off were not.
    """

    async def check_signature(request: Request) -> str:
        body = await request.body()
        try:
            path = request_path_with_query(request)
        except UnicodeDecodeError:
            raise ProblemError(401, SIGNATURE_INVALID, "request path is not valid UTF-8") from None
        args = (keyring_provider(), request.method, path, request.headers, body, int(clock()), nonce_store)
        result = verify(*args) if inline else await run_in_threadpool(verify, *args)
        caller = verified_or_problem(result)
        request.state.signed_caller = caller
        return caller.key_id

    return check_signature


def verified_or_problem(result: VerifiedCaller | VerifyFailure) -> VerifiedCaller:
    """The caller, or the 401 problem every signed route answers for a failed check."""
    if not isinstance(result, VerifiedCaller):
        raise ProblemError(401, result.code, result.detail, headers={"WWW-Authenticate": "HMAC-SHA256"})
    return result


async def signed_caller(request: Request) -> str:
    """The check installed on `app.state.signature_check` (see the module docstring)."""
    check: SignatureCheck | None = getattr(request.app.state, "signature_check", None)
    assert check is not None, "app.state.signature_check is not set: call require_signature at start-up"
    return await check(request)


SignedCaller = Annotated[str, Depends(signed_caller)]
"""The verified caller's key id; the route answers 401 problem+json when unsigned or wrong."""


class HmacAuth(httpx.Auth):
    """httpx auth that signs the exact method, target and body bytes being sent."""

    requires_request_body = True

    def __init__(
        self,
        key_id: str,
        secret: str | bytes,
        clock: Clock = time.time,
        nonce_factory: NonceFactory = new_nonce,
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self.clock = clock
        self.nonce_factory = nonce_factory

    @classmethod
    def from_keyring(
        cls, keyring: Keyring, clock: Clock = time.time, nonce_factory: NonceFactory = new_nonce
    ) -> HmacAuth:
        """Sign with the keyring's newest key (`Keyring(settings.hmac_keys)`)."""
        key = keyring.signing_key
        return cls(key.id, key.secret, clock, nonce_factory)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = signed_headers(
            self.key_id,
            self._secret,
            request.method,
            request.url.raw_path.decode("ascii"),  # path + "?query", percent-encoded as sent
            request.content,
            int(self.clock()),
            self.nonce_factory(),
        )
        request.headers.update(headers)
        yield request


class RequestsHmacAuth(requests.auth.AuthBase):
    """requests auth that signs the prepared request's exact body and path.

    A `str` body is replaced by its UTF-8 bytes so what is signed is what is sent
    (http.client would otherwise encode it as latin-1). Streamed bodies (files,
    generators) cannot be signed without reading them and are refused.
    """

    def __init__(
        self,
        key_id: str,
        secret: str | bytes,
        clock: Clock = time.time,
        nonce_factory: NonceFactory = new_nonce,
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self.clock = clock
        self.nonce_factory = nonce_factory

    @classmethod
    def from_keyring(
        cls, keyring: Keyring, clock: Clock = time.time, nonce_factory: NonceFactory = new_nonce
    ) -> RequestsHmacAuth:
        """Sign with the keyring's newest key (`Keyring(settings.hmac_keys)`)."""
        key = keyring.signing_key
        return cls(key.id, key.secret, clock, nonce_factory)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
            request.body = data
            request.headers["Content-Length"] = str(len(data))
        else:
            raise TypeError("RequestsHmacAuth signs bytes or str bodies only, not streams")
        assert request.method is not None
        request.headers.update(
            signed_headers(
                self.key_id,
                self._secret,
                request.method,
                request.path_url,
                data,
                int(self.clock()),
                self.nonce_factory(),
            )
        )
        return request
