"""Accounts end to end over HTTP against real PostgreSQL: register, log in, /me, token
refusals, the TOTP second factor, role changes and their audit events, the per-IP limit.

Most tests use a fake orderbook host (an httpx transport: fast, and it can be taken down);
`test_registration_funds_a_real_host` runs against a real host process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pyotp
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from emlib.settings import Settings
from functions import auth
from functions.app import create_app
from functions.auth import AdminUser, AuthConfig, CurrentUser, EditorUser, OptionalUser, Principal
from functions.orderbook_client import OrderbookClient
from tests.support.functions_stack import FunctionsStack, stack  # noqa: F401

T0_S = 1_800_000_000.0
PASSWORD = "password-123"


@dataclass
class Clock:
    now_s: float = T0_S

    def __call__(self) -> float:
        return self.now_s


@dataclass
class FakeHost:
    """Just enough of the orderbook host's account API; `down` makes it unreachable."""

    cash_minor: dict[str, int] = field(default_factory=dict)
    down: bool = False
    refuse_code: str | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        match = re.fullmatch(r"/accounts/([^/]+)(/deposit)?", request.url.path)
        assert match, request.url.path
        account = match.group(1)
        if match.group(2):
            if self.refuse_code:
                return httpx.Response(422, json={"code": self.refuse_code, "detail": "refused"})
            amount = int(httpx.Response(200, content=request.content).json()["amount_minor"])
            self.cash_minor[account] = self.cash_minor.get(account, 0) + amount
            return httpx.Response(200, json={"wal_seq": 1, "result": {}})
        if account not in self.cash_minor:
            return httpx.Response(404, json={"code": "unknown_account", "detail": "no account"})
        return httpx.Response(
            200, json={"account": account, "cash_minor": self.cash_minor[account], "reserved_minor": 0}
        )


# Routes that exist only in this test, to exercise each dependency on its own.
probe = APIRouter()


@probe.get("/test/current")
def current(user: CurrentUser) -> dict[str, Any]:
    return user.public()


@probe.get("/test/optional")
def optional(user: OptionalUser) -> dict[str, Any]:
    return {"user": None if user is None else user.public()}


@probe.get("/test/editor")
def editor(user: EditorUser) -> dict[str, Any]:
    return user.public()


@probe.post("/test/admin")
def admin(user: AdminUser) -> dict[str, Any]:
    return user.public()


@dataclass
class Env:
    app: FastAPI
    client: TestClient
    host: FakeHost
    clock: Clock
    settings: Settings
    db_url: str

    def register(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        response = self.client.post(
            "/api/v1/auth/register", json={"username": username, "password": password}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def login(self, username: str, password: str = PASSWORD) -> str:
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def make_user(self, username: str, role: auth.Role, *, totp: bool = True) -> tuple[str, str, str]:
        """A user with `role` (and a confirmed TOTP secret): (user_id, token, secret)."""
        principal, secret = auth.create_user(
            self.app.state.resources, username, PASSWORD, role, with_totp=totp
        )
        return principal.user_id, self.login(username), secret or ""

    def users(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute("SELECT id, username, role FROM users ORDER BY created_at").fetchall()

    def audit(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute(
                "SELECT actor, action, target, payload FROM audit_events ORDER BY seq"
            ).fetchall()


def bearer(token: str, totp: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if totp is not None:
        headers["X-TOTP"] = totp
    return headers


def make_settings(db_url: str, tmp_path: Path, **overrides: str) -> Settings:
    values = {"APP_ENV": "test", "DATABASE_URL": db_url, "DATA_DIR": str(tmp_path), **overrides}
    return Settings.model_validate(values)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    settings = make_settings(db_url, tmp_path)
    app = create_app(settings)
    app.include_router(probe)
    host = FakeHost()
    app.state.orderbook = OrderbookClient(settings, transport=httpx.MockTransport(host.handle))
    clock = Clock()
    # a roomy rate limit: only the rate-limit test tightens it
    app.state.auth_config = AuthConfig(rate_capacity=1000, clock_s=clock)
    with TestClient(app) as client:
        yield Env(app, client, host, clock, settings, db_url)
    app.state.orderbook.close()
    app.state.resources.close()


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


# ---------------------------------------------------------------- register, login, me


def test_register_login_me(env: Env) -> None:
    body = env.register("alice")
    assert body == {
        "user_id": body["user_id"],
        "username": "alice",
        "role": "editor",
        "kind": "user",
        "totp_enabled": False,
        "balance_minor": auth.STARTING_BALANCE_MINOR,
    }
    assert auth.USER_ID_RE.fullmatch(body["user_id"])
    assert env.host.cash_minor == {body["user_id"]: auth.STARTING_BALANCE_MINOR}

    response = env.client.post("/api/v1/auth/login", json={"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 200
    login = response.json()
    assert login["token_type"] == "bearer"
    assert login["expires_in"] == env.settings.jwt_ttl_s
    assert login["user"]["user_id"] == body["user_id"]
    claims = jwt.decode(login["access_token"], options={"verify_signature": False})
    assert claims["sub"] == body["user_id"] and claims["exp"] == int(T0_S) + env.settings.jwt_ttl_s

    me = env.client.get("/api/v1/me", headers=bearer(login["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert me.json()["account"]["cash_minor"] == auth.STARTING_BALANCE_MINOR
    assert me.json()["account_error"] is None
    # the password is stored as an argon2id hash, never as given
    with psycopg.connect(env.db_url) as conn:
        row = conn.execute("SELECT password_hash FROM users").fetchone()
    assert row is not None and row[0].startswith("$argon2id$") and PASSWORD not in row[0]


def test_me_without_host_still_answers(env: Env) -> None:
    env.register("alice")
    token = env.login("alice")
    env.host.down = True
    me = env.client.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["account"] is None and me.json()["account_error"] == "orderbook_unavailable"


def test_duplicate_username_any_case(env: Env) -> None:
    env.register("alice")
    for name in ("alice", "Alice", "ALICE"):
        response = env.client.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD})
        problem(response, 409, "username_taken")
    assert [u[1] for u in env.users()] == ["alice"]
    assert len(env.host.cash_minor) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "al", "password": PASSWORD}, 422, "invalid_username"),
        ({"username": "a" * 33, "password": PASSWORD}, 422, "invalid_username"),
        ({"username": "al ice", "password": PASSWORD}, 422, "invalid_username"),
        ({"username": "al/ice", "password": PASSWORD}, 422, "invalid_username"),
        ({"username": "alice", "password": "short"}, 422, "invalid_password"),
        ({"username": "alice", "password": "x" * 129}, 422, "invalid_password"),
        ({"username": "alice"}, 422, "missing_field"),
        ({"password": PASSWORD}, 422, "missing_field"),
        ({"username": "alice", "password": PASSWORD, "role": "admin"}, 422, "unknown_field"),
        ({"username": 12345, "password": PASSWORD}, 422, "validation_error"),
        ({"username": "alice", "password": ["x"] * 10}, 422, "validation_error"),
        ("not json", 400, "malformed_json"),
    ],
)
def test_bad_registrations_write_nothing(env: Env, body: Any, status: int, code: str) -> None:
    if isinstance(body, str):
        response = env.client.post(
            "/api/v1/auth/register", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = env.client.post("/api/v1/auth/register", json=body)
    problem(response, status, code)
    assert env.users() == []
    assert env.host.cash_minor == {}


def test_host_unreachable_rolls_registration_back(env: Env) -> None:
    env.host.down = True
    response = env.client.post("/api/v1/auth/register", json={"username": "alice", "password": PASSWORD})
    problem(response, 503, "orderbook_unavailable")
    assert env.users() == []
    # nothing half-written: the same name registers once the host is back
    env.host.down = False
    assert env.register("alice")["username"] == "alice"
    assert len(env.users()) == 1


def test_host_refusal_rolls_registration_back(env: Env) -> None:
    env.host.refuse_code = "account_limit"
    response = env.client.post("/api/v1/auth/register", json={"username": "alice", "password": PASSWORD})
    problem(response, 422, "account_limit")
    assert env.users() == []


def test_login_failures_look_the_same(env: Env) -> None:
    env.register("alice")
    wrong_password = env.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "wrong-pass"}
    )
    unknown_user = env.client.post("/api/v1/auth/login", json={"username": "nobody", "password": PASSWORD})
    bad_shape = env.client.post("/api/v1/auth/login", json={"username": "a b", "password": "x" * 200})
    bodies = [problem(r, 401, "invalid_credentials") for r in (wrong_password, unknown_user, bad_shape)]
    assert bodies[0] == bodies[1] == bodies[2]


# ---------------------------------------------------------------- tokens


def test_missing_and_malformed_authorization(env: Env) -> None:
    problem(env.client.get("/api/v1/me"), 401, "not_authenticated")
    response = env.client.get("/api/v1/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == "Bearer"
    problem(env.client.get("/api/v1/me", headers=bearer("garbage")), 401, "invalid_token")


def test_expired_token(env: Env) -> None:
    env.register("alice")
    token = env.login("alice")
    env.clock.now_s += env.settings.jwt_ttl_s - 1
    assert env.client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    env.clock.now_s += 1
    problem(env.client.get("/api/v1/me", headers=bearer(token)), 401, "token_expired")


def forge(env: Env, user_id: str, *, key: str | None = None, **changes: Any) -> str:
    claims: dict[str, Any] = {
        "sub": user_id,
        "role": "super_admin",
        "iss": env.settings.jwt_issuer,
        "aud": env.settings.jwt_audience,
        "iat": int(T0_S),
        "exp": int(T0_S) + 600,
        "jti": "j1",
    }
    claims.update(changes)
    return jwt.encode(claims, key or env.settings.jwt_secret, algorithm="HS256")


def test_forged_and_misaddressed_tokens(env: Env) -> None:
    user_id = env.register("alice")["user_id"]
    # a token made with the right key passes (so each refusal below is about its change)
    assert env.client.get("/api/v1/me", headers=bearer(forge(env, user_id))).status_code == 200
    for token in (
        forge(env, user_id, key="somebody-elses-secret-0123456789abcdef"),
        forge(env, user_id, aud="another-app"),
        forge(env, user_id, iss="another-issuer"),
        forge(env, "u-" + "0" * 32),  # no such user
    ):
        problem(env.client.get("/api/v1/me", headers=bearer(token)), 401, "invalid_token")
    _header, payload, signature = forge(env, user_id).split(".")
    none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    for token in (f"{none_header}.{payload}.", f"{none_header}.{payload}.{signature}"):
        problem(env.client.get("/api/v1/me", headers=bearer(token)), 401, "invalid_token")


def test_role_comes_from_the_database(env: Env) -> None:
    user_id = env.register("alice")["user_id"]
    # the token claims super_admin; the row says editor, and the row wins
    token = forge(env, user_id, role="super_admin")
    assert env.client.get("/test/current", headers=bearer(token)).json()["role"] == "editor"
    assert env.client.get("/test/editor", headers=bearer(token)).status_code == 200
    with psycopg.connect(env.db_url) as conn:
        conn.execute("UPDATE users SET role = 'viewer' WHERE id = %s", (user_id,))
    problem(env.client.get("/test/editor", headers=bearer(token)), 403, "forbidden")
    with psycopg.connect(env.db_url) as conn:
        conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    problem(env.client.get("/test/current", headers=bearer(token)), 401, "invalid_token")


def test_optional_user(env: Env) -> None:
    env.register("alice")
    assert env.client.get("/test/optional").json() == {"user": None}
    token = env.login("alice")
    assert env.client.get("/test/optional", headers=bearer(token)).json()["user"]["username"] == "alice"
    problem(env.client.get("/test/optional", headers=bearer("garbage")), 401, "invalid_token")


# ---------------------------------------------------------------- second factor


def code(secret: str, now_s: float) -> str:
    return pyotp.TOTP(secret).at(now_s)


def test_admin_route_refusals(env: Env) -> None:
    _, viewer_token, viewer_secret = env.make_user("viewer1", "viewer")
    _, editor_token, _ = env.make_user("editor1", "editor")
    _, admin_token, secret = env.make_user("admin1", "admin")
    _, bare_admin_token, _ = env.make_user("admin2", "admin", totp=False)
    now = env.clock.now_s

    problem(env.client.post("/test/admin"), 401, "not_authenticated")
    problem(
        env.client.post("/test/admin", headers=bearer(viewer_token, code(viewer_secret, now))),
        403,
        "forbidden",
    )
    problem(env.client.post("/test/admin", headers=bearer(editor_token, "000000")), 403, "forbidden")
    problem(
        env.client.post("/test/admin", headers=bearer(bare_admin_token, "000000")), 403, "totp_not_enrolled"
    )
    problem(env.client.post("/test/admin", headers=bearer(admin_token)), 401, "totp_required")
    wrong = f"{(int(code(secret, now)) + 1) % 1_000_000:06d}"
    problem(env.client.post("/test/admin", headers=bearer(admin_token, wrong)), 401, "totp_invalid")
    problem(env.client.post("/test/admin", headers=bearer(admin_token, "12ab56")), 401, "totp_invalid")
    # two steps away is outside the window
    problem(
        env.client.post("/test/admin", headers=bearer(admin_token, code(secret, now - 60))),
        401,
        "totp_invalid",
    )

    good = code(secret, now)
    ok = env.client.post("/test/admin", headers=bearer(admin_token, good))
    assert ok.status_code == 200 and ok.json()["username"] == "admin1"
    # the same code again, even a few seconds later: refused as a replay
    env.clock.now_s += 5
    replay = problem(env.client.post("/test/admin", headers=bearer(admin_token, good)), 401, "totp_invalid")
    assert "already used" in replay["detail"]
    # the neighbouring steps' codes are each good once
    assert (
        env.client.post("/test/admin", headers=bearer(admin_token, code(secret, now - 30))).status_code == 200
    )
    assert (
        env.client.post("/test/admin", headers=bearer(admin_token, code(secret, now + 30))).status_code == 200
    )
    # the next step brings a fresh code
    env.clock.now_s = now + 60
    assert (
        env.client.post("/test/admin", headers=bearer(admin_token, code(secret, now + 60))).status_code == 200
    )


def test_totp_enrolment(env: Env) -> None:
    user_id = env.register("alice")["user_id"]
    token = env.login("alice")
    problem(
        env.client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": "123456"}),
        409,
        "totp_not_pending",
    )
    enrol = env.client.post("/api/v1/auth/totp/enroll", headers=bearer(token))
    assert enrol.status_code == 200
    secret = enrol.json()["secret"]
    assert enrol.json()["otpauth_uri"].startswith("otpauth://totp/Everything%20Market:alice?secret=" + secret)
    with psycopg.connect(env.db_url) as conn:
        row = conn.execute("SELECT totp_secret_enc, totp_pending_enc FROM users").fetchone()
    assert row is not None and row[0] is None and secret not in row[1]  # stored sealed

    wrong = f"{(int(code(secret, env.clock.now_s)) + 1) % 1_000_000:06d}"
    confirm = env.client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": wrong})
    problem(confirm, 422, "totp_invalid")
    good = code(secret, env.clock.now_s)
    confirm = env.client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": good})
    assert confirm.status_code == 200 and confirm.json() == {"totp_enabled": True}
    assert env.client.get("/api/v1/me", headers=bearer(token)).json()["totp_enabled"] is True
    problem(env.client.post("/api/v1/auth/totp/enroll", headers=bearer(token)), 409, "totp_already_enrolled")

    # promoted to admin, the confirming code cannot be replayed as a second factor
    with psycopg.connect(env.db_url) as conn:
        conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (user_id,))
    problem(env.client.post("/test/admin", headers=bearer(token, good)), 401, "totp_invalid")
    env.clock.now_s += 30
    fresh = code(secret, env.clock.now_s)
    assert env.client.post("/test/admin", headers=bearer(token, fresh)).status_code == 200


# ---------------------------------------------------------------- role management


def set_role(env: Env, user_id: str, token: str, totp: str | None, **body: Any) -> httpx.Response:
    response: httpx.Response = env.client.post(
        f"/api/v1/admin/users/{user_id}/role", headers=bearer(token, totp), json=body
    )
    return response


def test_role_change_is_audited(env: Env) -> None:
    boss_id, boss_token, boss_secret = env.make_user("boss", "super_admin")
    alice_id = env.register("alice")["user_id"]
    alice_token = env.login("alice")

    response = set_role(
        env, alice_id, boss_token, code(boss_secret, T0_S), role="admin", reason="runs markets"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["user_id"], body["role"], body["previous_role"]) == (alice_id, "admin", "editor")
    assert env.audit() == [
        (
            boss_id,
            "set_role",
            alice_id,
            {"from": "editor", "to": "admin", "reason": "runs markets", "actor_username": "boss"},
        )
    ]
    with psycopg.connect(env.db_url) as conn:
        assert conn.execute("SELECT id FROM audit_events").fetchone() == (body["audit_event_id"],)
    assert env.app.state.resources.audit_log().verify().ok
    # alice's existing token now carries the new role
    assert env.client.get("/api/v1/me", headers=bearer(alice_token)).json()["role"] == "admin"


def test_role_change_refusals_write_nothing(env: Env) -> None:
    boss_id, boss_token, boss_secret = env.make_user("boss", "super_admin")
    _, admin_token, admin_secret = env.make_user("admin1", "admin")
    alice_id = env.register("alice")["user_id"]
    t = env.clock.now_s
    cases: list[tuple[httpx.Response, int, str]] = [
        # an admin is not a super_admin
        (
            set_role(env, alice_id, admin_token, code(admin_secret, t), role="admin", reason="r"),
            403,
            "forbidden",
        ),
        (set_role(env, alice_id, boss_token, None, role="admin", reason="r"), 401, "totp_required"),
        (set_role(env, alice_id, boss_token, "000000", role="admin", reason="r"), 401, "totp_invalid"),
    ]
    # each call below spends a fresh code (a refused request still uses its code)
    for offset, (target, payload, status, code_) in enumerate(
        [
            (boss_id, {"role": "viewer", "reason": "r"}, 409, "cannot_change_own_role"),
            ("u-" + "0" * 32, {"role": "viewer", "reason": "r"}, 404, "user_not_found"),
        ]
    ):
        totp = code(boss_secret, t + (offset - 1) * 30)
        cases.append((set_role(env, target, boss_token, totp, **payload), status, code_))
    env.clock.now_s = t + 90
    cases.append(
        (
            set_role(env, alice_id, boss_token, code(boss_secret, t + 90), role="owner", reason="r"),
            422,
            "invalid_enum",
        )
    )
    env.clock.now_s = t + 150
    cases.append(
        (
            set_role(env, alice_id, boss_token, code(boss_secret, t + 150), role="admin", reason=""),
            422,
            "validation_error",
        )
    )
    env.clock.now_s = t + 210
    cases.append(
        (
            set_role(env, "alice", boss_token, code(boss_secret, t + 210), role="admin", reason="r"),
            422,
            "validation_error",
        )
    )
    for response, status, code_ in cases:
        problem(response, status, code_)
    assert env.audit() == []
    assert {u[1]: u[2] for u in env.users()} == {"boss": "super_admin", "admin1": "admin", "alice": "editor"}


# ---------------------------------------------------------------- rate limit


def test_login_and_register_share_a_per_ip_limit(env: Env) -> None:
    env.app.state.auth_config = AuthConfig(rate_capacity=3, rate_per_min=6.0, clock_s=env.clock)
    env.register("alice")
    assert (
        env.client.post("/api/v1/auth/login", json={"username": "alice", "password": "nope-nope"}).status_code
        == 401
    )
    env.login("alice")
    limited = env.client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    problem(limited, 429, "rate_limited")
    assert limited.headers["retry-after"] == "10"  # 6 per minute: one every 10 s
    problem(
        env.client.post("/api/v1/auth/register", json={"username": "bob", "password": PASSWORD}),
        429,
        "rate_limited",
    )
    assert [u[1] for u in env.users()] == ["alice"]  # the limited registration wrote nothing
    env.clock.now_s += 10
    env.login("alice")
    problem(
        env.client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}),
        429,
        "rate_limited",
    )
    # other routes are not limited by it
    assert env.client.get("/health").status_code == 200


# ---------------------------------------------------------------- bootstrap CLI and a real host


def test_create_admin_cli(env: Env) -> None:
    cli_env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": env.db_url,
        "DATA_DIR": str(env.settings.data_dir),
    }
    run = subprocess.run(
        [sys.executable, "-m", "functions.auth", "create-admin", "--username", "root", "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = dict(line.split("=", 1) for line in run.stdout.strip().splitlines())
    assert out["role"] == "super_admin"
    assert PASSWORD not in run.stdout
    env.clock.now_s = time.time()  # the printed secret is used with the real clock
    token = env.login("root")
    ok = env.client.post("/test/admin", headers=bearer(token, pyotp.TOTP(out["totp_secret"]).now()))
    assert ok.status_code == 200 and ok.json()["user_id"] == out["user_id"]
    again = subprocess.run(
        [sys.executable, "-m", "functions.auth", "create-admin", "--username", "ROOT", "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "taken" in again.stderr


def test_registration_funds_a_real_host(stack: FunctionsStack) -> None:  # noqa: F811 - the fixture
    client = stack.client
    response = client.post("/api/v1/auth/register", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201, response.text
    user_id = response.json()["user_id"]
    token = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}).json()[
        "access_token"
    ]
    me = client.get("/api/v1/me", headers=bearer(token)).json()
    assert me["user_id"] == user_id
    assert me["account"]["account"] == user_id
    assert me["account"]["cash_minor"] == auth.STARTING_BALANCE_MINOR
    assert me["account"]["open_orders"] == []


def test_principal_is_frozen() -> None:
    p = Principal("u-" + "a" * 32, "alice", "editor")
    with pytest.raises(AttributeError):
        p.role = "admin"  # type: ignore[misc]


def test_concurrent_registrations_of_one_name(env: Env) -> None:
    """Two sign-ups race for one name while the host is slow: one user, one deposit."""
    import threading

    release = threading.Event()
    slow = env.host.handle

    def handle(request: httpx.Request) -> httpx.Response:
        release.wait(timeout=10)
        return slow(request)

    env.app.state.orderbook = OrderbookClient(env.settings, transport=httpx.MockTransport(handle))
    results: list[int] = []

    def sign_up(name: str) -> None:
        response = env.client.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD})
        results.append(response.status_code)

    threads = [threading.Thread(target=sign_up, args=(name,)) for name in ("carol", "Carol")]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both are in: one waits on the host, the other on the first one's row
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [201, 409]
    assert len(env.users()) == 1
    assert list(env.host.cash_minor.values()) == [auth.STARTING_BALANCE_MINOR]
