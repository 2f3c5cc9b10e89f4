"""RS256 sessions verified against a JWKS URL (production with e.g. Cognito): a real HTTP
server on localhost serves a key set generated here, and the app runs with
JWT_ALGORITHM=RS256."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from emlib.settings import Settings
from functions import auth
from functions.app import create_app
from functions.orderbook_client import OrderbookClient


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class JwksServer:
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    fetches: int = 0

    def jwks(self) -> bytes:
        jwks = []
        for kid, key in self.keys.items():
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwks.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return json.dumps({"keys": jwks}).encode()


@pytest.fixture
def jwks() -> Iterator[tuple[JwksServer, str]]:
    state = JwksServer(keys={"k1": new_key()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            body = state.jwks()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def rs256_app(db_url: str, tmp_path: Path, jwks_url: str) -> tuple[Any, Settings]:
    settings = Settings.model_validate(
        {
            "APP_ENV": "test",
            "DATABASE_URL": db_url,
            "DATA_DIR": str(tmp_path),
            "JWT_ALGORITHM": "RS256",
            "JWT_JWKS_URL": jwks_url,
            "JWT_ISSUER": "https://idp.example/pool-1",
            "JWT_AUDIENCE": "client-123",
        }
    )
    app = create_app(settings)
    no_account = httpx.MockTransport(lambda r: httpx.Response(404, json={"code": "unknown_account"}))
    app.state.orderbook = OrderbookClient(settings, transport=no_account)
    return app, settings


def token(
    key: rsa.RSAPrivateKey | bytes, kid: str, sub: str, *, algorithm: str = "RS256", **changes: Any
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "iss": "https://idp.example/pool-1",
        "aud": "client-123",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def me(client: TestClient, bearer: str) -> httpx.Response:
    response: httpx.Response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {bearer}"})
    return response


def test_rs256_tokens_from_the_jwks(db_url: str, tmp_path: Path, jwks: tuple[JwksServer, str]) -> None:
    server, url = jwks
    app, settings = rs256_app(db_url, tmp_path, url)
    fetches_at_start = server.fetches
    principal, _ = auth.create_user(app.state.resources, "alice", "password-123", "editor")
    k1 = server.keys["k1"]
    with TestClient(app) as client:
        ok = me(client, token(k1, "k1", principal.user_id))
        assert ok.status_code == 200, ok.text
        assert ok.json()["user_id"] == principal.user_id
        assert ok.json()["account_error"] == "unknown_account"

        # an outside identity's `sub`, linked to the user
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "UPDATE users SET external_subject = 'idp-sub-42' WHERE id = %s", (principal.user_id,)
            )
        assert me(client, token(k1, "k1", "idp-sub-42")).json()["user_id"] == principal.user_id

        public_pem = k1.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        refused = {
            "another key, same kid": token(new_key(), "k1", principal.user_id),
            "unknown kid": token(new_key(), "k9", principal.user_id),
            "wrong audience": token(k1, "k1", principal.user_id, aud="client-999"),
            "wrong issuer": token(k1, "k1", principal.user_id, iss="https://evil.example"),
            "unknown subject": token(k1, "k1", "idp-sub-unknown"),
            "HS256 keyed with the public key": _hs256_with(public_pem, principal.user_id),
        }
        for why, bad in refused.items():
            response = me(client, bad)
            assert (response.status_code, response.json()["code"]) == (401, "invalid_token"), why
        expired = me(
            client, token(k1, "k1", principal.user_id, iat=int(time.time()) - 700, exp=int(time.time()) - 1)
        )
        assert (expired.status_code, expired.json()["code"]) == (401, "token_expired")

        # forged kids refetch the key set at most once per cooldown
        for _ in range(5):
            assert me(client, token(new_key(), "k-" + uuid.uuid4().hex, principal.user_id)).status_code == 401
        assert server.fetches - fetches_at_start <= 2

        # rotation: a newly published key is fetched (unknown kid, past the cooldown)
        app.state.token_codec = auth.TokenCodec(settings, jwks_cooldown_s=0)
        assert me(client, token(k1, "k1", principal.user_id)).status_code == 200
        server.keys["k2"] = new_key()
        assert me(client, token(server.keys["k2"], "k2", principal.user_id)).status_code == 200

        # passwords do not mint RS256 sessions: the identity provider does
        login = client.post("/api/v1/auth/login", json={"username": "alice", "password": "password-123"})
        assert (login.status_code, login.json()["code"]) == (409, "external_login_required")
    app.state.resources.close()


def _hs256_with(secret: bytes, sub: str) -> str:
    # PyJWT refuses to sign HS256 with a PEM key, so build the token by hand
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    claims = {
        "sub": sub,
        "iss": "https://idp.example/pool-1",
        "aud": "client-123",
        "iat": now,
        "exp": now + 600,
    }
    payload = b64(json.dumps({**claims, "jti": "x"}).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_jwks_unreachable(db_url: str, tmp_path: Path) -> None:
    app, _ = rs256_app(db_url, tmp_path, "http://127.0.0.1:9/.well-known/jwks.json")
    with TestClient(app) as client:
        response = me(client, token(new_key(), "k1", "u-" + "0" * 32))
        assert (response.status_code, response.json()["code"]) == (503, "jwks_unavailable")
    app.state.resources.close()
