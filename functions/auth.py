"""Who is calling: users, passwords, JWT sessions, the TOTP second factor, and the
FastAPI dependencies routes use to ask (`CurrentUser`, `OptionalUser`, `AdminUser`,
`require_role`).

Problem: every route must know the caller and their role, cheaply and without trusting
anything the caller could have edited. So:

- Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher`); an unknown
  username is checked against a dummy hash so both failures take the same time.
- Sessions are JWTs (PyJWT): HS256 signed with `JWT_SECRET` locally, or RS256 verified
  against a JWKS URL (e.g. Cognito) when `JWT_ALGORITHM=RS256`. Only the configured
  algorithm is accepted (no `alg: none`, no HS/RS confusion); `iss`, `aud`, `exp`, `iat`,
  `sub`, `jti` are required. The role in a token is informational: the user row is read
  on every request, so a demoted or deleted user loses access at once.
- Admin routes need a second factor: header `X-TOTP` with the current code of the
  user's enrolled secret (one step either side accepted), each code accepted once.
- Roles are ordered viewer < editor < admin < super_admin; `require_role("editor")`
  admits editors and above.

Result codes (problem+json), also in docs/specs/auth.md:
    401 not_authenticated   no bearer token
    401 token_expired       `exp` has passed
    401 invalid_token       bad signature, issuer, audience, algorithm, shape; user gone
    403 forbidden           role too low
    403 totp_not_enrolled   an admin route, but the user has no confirmed TOTP secret
    401 totp_required       an admin route without `X-TOTP`
    401 totp_invalid        wrong code, or a code already used
    503 jwks_unavailable    RS256 mode and the JWKS URL cannot be fetched

Time comes from `AuthConfig.clock_s` (on `app.state.auth_config`), so tests can step it.

Routes:
    def place(body: OrderIn, user: EditorUser) -> ...          # editor and above
    def act(body: AdminAction, admin: AdminUser) -> ...        # admin + X-TOTP
    admin.user_id is the audit `actor`; admin.username is for display.

Tests and demo data: `create_user(resources, name, pw, "admin", with_totp=True)` returns
(principal, totp_secret); `TokenCodec(settings).mint(principal, now_s)` a token;
`pyotp.TOTP(secret).at(now_s)` a code. Each code is accepted once, and codes of the
steps either side are valid too, so a test needing more than three admin actions sets
`app.state.auth_config = AuthConfig(clock_s=...)` and steps the clock 30 s between them.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from psycopg import errors as pg_errors

from emlib.db import Conn
from emlib.problems import ProblemError
from emlib.resources import Resources
from emlib.settings import Settings

Role = Literal["viewer", "editor", "admin", "super_admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin", "super_admin")
ROLE_RANK: dict[str, int] = {r: i for i, r in enumerate(ROLES)}
ADMIN_ROLES: frozenset[str] = frozenset({"admin", "super_admin"})
# Registered users trade and request markets; viewer is a read-only role an admin assigns.
DEFAULT_ROLE: Role = "editor"

USERNAME_RE = re.compile(r"^[A-Za-z0-9_-]{3,32}$")
USER_ID_RE = re.compile(r"^u-[0-9a-f]{32}$")
PASSWORD_CHARS_MIN = 8
PASSWORD_CHARS_MAX = 128  # bounds the hashing work an anonymous caller can ask for

STARTING_BALANCE_MINOR = 1_000_000  # play money funded at registration (10 000.00 units)
TOTP_INTERVAL_S = 30
TOTP_VALID_WINDOW = 1  # one 30 s step either side, for clock drift
TOTP_ISSUER = "Everything Market"
TOTP_HEADER = "X-TOTP"
# An unknown `kid` refetches the JWKS at most this often, so forged kids cannot make us
# hammer the identity provider; a rotated key is seen within this time.
JWKS_REFETCH_COOLDOWN_S = 30.0
JWT_LEEWAY_S = 30  # tolerated skew for `iat` in the future (RS256 issuers' clocks)
AUTH_RATE_CAPACITY = 10  # login/register attempts per IP...
AUTH_RATE_PER_MIN = 10.0  # ...refilled at this rate

_TOTP_KEY_INFO = b"everything-market/totp-secret/v1"


# ---------------------------------------------------------------- principal and config


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `user_id` is also their orderbook account id."""

    user_id: str
    username: str
    role: Role
    kind: Literal["user"] = "user"  # agents arrive later with kind "agent"
    totp_enabled: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES

    def has_role(self, minimum: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[minimum]

    def public(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "role": self.role,
            "kind": self.kind,
            "totp_enabled": self.totp_enabled,
        }


@dataclass(frozen=True)
class AuthConfig:
    """Knobs with production defaults; tests replace `app.state.auth_config`."""

    starting_balance_minor: int = STARTING_BALANCE_MINOR
    rate_capacity: int = AUTH_RATE_CAPACITY
    rate_per_min: float = AUTH_RATE_PER_MIN
    clock_s: Callable[[], float] = field(default=time.time)


DEFAULT_AUTH_CONFIG = AuthConfig()


def auth_config(request: Request) -> AuthConfig:
    config: AuthConfig = getattr(request.app.state, "auth_config", DEFAULT_AUTH_CONFIG)
    return config


# ---------------------------------------------------------------- validation (pure)


def check_username(username: str) -> str:
    if not USERNAME_RE.fullmatch(username):
        raise ProblemError(422, "invalid_username", "username: 3-32 characters of A-Z a-z 0-9 _ -")
    return username


def check_password(password: str) -> str:
    if not PASSWORD_CHARS_MIN <= len(password) <= PASSWORD_CHARS_MAX:
        raise ProblemError(
            422, "invalid_password", f"password: {PASSWORD_CHARS_MIN}-{PASSWORD_CHARS_MAX} characters"
        )
    return password


def new_user_id() -> str:
    return "u-" + uuid.uuid4().hex


# ---------------------------------------------------------------- passwords

_hasher = PasswordHasher()
_dummy_hash_lock = threading.Lock()
_dummy_hash: str | None = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _dummy() -> str:
    global _dummy_hash
    with _dummy_hash_lock:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
        return _dummy_hash


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches. A missing hash still costs one verification."""
    try:
        return _hasher.verify(stored_hash or _dummy(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


# ---------------------------------------------------------------- TOTP secrets at rest


def _totp_key(settings: Settings) -> bytes:
    # Derived from the audit HMAC key, which never rotates (old audit events must keep
    # verifying); HKDF with its own label keeps the two uses apart.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_TOTP_KEY_INFO).derive(
        settings.audit_hmac_key.encode()
    )


def seal_secret(settings: Settings, user_id: str, secret: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(_totp_key(settings)).encrypt(nonce, secret.encode(), user_id.encode())
    return "v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_secret(settings: Settings, user_id: str, sealed: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert sealed.startswith("v1:"), "unknown TOTP secret format"
    raw = base64.urlsafe_b64decode(sealed[3:])
    return AESGCM(_totp_key(settings)).decrypt(raw[:12], raw[12:], user_id.encode()).decode()


def totp_matching_timecode(secret: str, code: str, now_s: float) -> int | None:
    """The time step whose code equals `code` (within the valid window), or None."""
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL_S)
    current = int(now_s) // TOTP_INTERVAL_S
    found = None
    for offset in range(-TOTP_VALID_WINDOW, TOTP_VALID_WINDOW + 1):
        step = current + offset
        # compare every candidate: the time taken does not depend on which one matched
        if hmac.compare_digest(totp.at(step * TOTP_INTERVAL_S), code):
            found = step
    return found


def consume_totp(conn: Conn, user_id: str, timecode: int) -> bool:
    """Record a used code; False when that code (its time step) was used before."""
    conn.execute(
        "DELETE FROM totp_uses WHERE user_id = %s AND timecode < %s",
        (user_id, timecode - 2 * TOTP_VALID_WINDOW - 1),
    )
    row = conn.execute(
        "INSERT INTO totp_uses (user_id, timecode) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (user_id, timecode),
    ).fetchone()
    return row is not None


# ---------------------------------------------------------------- user store


@dataclass(frozen=True)
class UserRow:
    id: str
    username: str
    password_hash: str | None
    role: Role
    kind: Literal["user"]
    totp_secret_enc: str | None
    totp_pending_enc: str | None
    created_at: datetime

    def principal(self) -> Principal:
        return Principal(self.id, self.username, self.role, self.kind, self.totp_secret_enc is not None)


_USER_COLUMNS = "id, username, password_hash, role, kind, totp_secret_enc, totp_pending_enc, created_at"


def _user(row: tuple[Any, ...] | None) -> UserRow | None:
    return None if row is None else UserRow(*row)


def get_user(conn: Conn, user_id: str) -> UserRow | None:
    return _user(conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s", (user_id,)).fetchone())


def get_user_by_subject(conn: Conn, subject: str) -> UserRow | None:
    """A token's `sub`: our user id, or a linked outside identity (RS256 mode)."""
    return _user(
        conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s OR external_subject = %s LIMIT 1",
            (subject, subject),
        ).fetchone()
    )


def get_user_by_username(conn: Conn, username: str) -> UserRow | None:
    return _user(
        conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE lower(username) = lower(%s)", (username,)
        ).fetchone()
    )


class UsernameTakenError(Exception):
    pass


def insert_user(conn: Conn, user_id: str, username: str, password_hash: str | None, role: Role) -> UserRow:
    """Insert in the caller's transaction (which must be open: `with conn.transaction()`).
    Raises UsernameTakenError on a duplicate."""
    try:
        with conn.transaction():  # a savepoint, so the caller's transaction survives
            row = conn.execute(
                f"INSERT INTO users (id, username, password_hash, role) VALUES (%s, %s, %s, %s) "
                f"RETURNING {_USER_COLUMNS}",
                (user_id, username, password_hash, role),
            ).fetchone()
    except pg_errors.UniqueViolation as exc:
        raise UsernameTakenError(username) from exc
    user = _user(row)
    assert user is not None
    return user


def create_user(
    resources: Resources,
    username: str,
    password: str,
    role: Role = DEFAULT_ROLE,
    *,
    with_totp: bool = False,
    fund: Callable[[str], object] | None = None,
) -> tuple[Principal, str | None]:
    """Create a user directly (CLI, demo data, tests). Returns the principal and, with
    `with_totp`, the new TOTP secret (already confirmed). `fund(user_id)` runs before
    the row commits, as in registration: if it raises, nothing is written."""
    check_username(username)
    check_password(password)
    password_hash = hash_password(password)
    user_id = new_user_id()
    secret = pyotp.random_base32() if with_totp else None
    with resources.pool.connection() as conn, conn.transaction():
        user = insert_user(conn, user_id, username, password_hash, role)
        if secret is not None:
            conn.execute(
                "UPDATE users SET totp_secret_enc = %s WHERE id = %s",
                (seal_secret(resources.settings, user_id, secret), user_id),
            )
        if fund is not None:
            fund(user_id)
    return Principal(user.id, user.username, user.role, user.kind, secret is not None), secret


# ---------------------------------------------------------------- tokens


class TokenCodec:
    """Mints (HS256 only) and verifies session tokens for one settings object."""

    def __init__(self, settings: Settings, *, jwks_cooldown_s: float = JWKS_REFETCH_COOLDOWN_S) -> None:
        self.settings = settings
        self.algorithm = settings.jwt_algorithm
        self._jwks: jwt.PyJWKClient | None = None
        if self.algorithm == "RS256":
            assert settings.jwt_jwks_url, "JWT_ALGORITHM=RS256 needs JWT_JWKS_URL"
            self._jwks = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=5,
                cooldown_duration=jwks_cooldown_s,
            )

    @property
    def can_mint(self) -> bool:
        return self.algorithm == "HS256"

    def mint(self, principal: Principal, now_s: float) -> tuple[str, int]:
        """A token for `principal`, and its lifetime in seconds."""
        assert self.can_mint, "RS256 tokens come from the identity provider"
        iat = int(now_s)
        ttl_s = self.settings.jwt_ttl_s
        claims = {
            "sub": principal.user_id,
            "role": principal.role,
            "kind": principal.kind,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": iat,
            "exp": iat + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.settings.jwt_secret, algorithm="HS256"), ttl_s

    def verify(self, token: str, now_s: float) -> dict[str, Any]:
        """The token's claims, or ProblemError 401 `invalid_token` / `token_expired`."""
        try:
            if self._jwks is not None:
                key: Any = self._jwks.get_signing_key_from_jwt(token).key
            else:
                key = self.settings.jwt_secret
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                # time is checked below against our clock, not PyJWT's
                options={
                    "require": ["sub", "iss", "aud", "iat", "exp", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise ProblemError(503, "jwks_unavailable", "cannot fetch the token signing keys") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise _unauthorized("invalid_token", f"invalid token: {exc}") from exc
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int) or not isinstance(claims.get("sub"), str):
            raise _unauthorized(
                "invalid_token", "invalid token: sub, iat and exp must be a string and integers"
            )
        if iat > now_s + JWT_LEEWAY_S:
            raise _unauthorized("invalid_token", "invalid token: issued in the future")
        if exp <= now_s:
            raise _unauthorized("token_expired", "token expired")
        return claims


_codec_lock = threading.Lock()


def token_codec(request: Request) -> TokenCodec:
    """One codec per app (the JWKS client caches keys), built on first use."""
    state = request.app.state
    codec: TokenCodec | None = getattr(state, "token_codec", None)
    if codec is None:
        with _codec_lock:
            codec = getattr(state, "token_codec", None)
            if codec is None:
                codec = TokenCodec(state.settings)
                state.token_codec = codec
    return codec


def _unauthorized(code: str, detail: str) -> ProblemError:
    return ProblemError(401, code, detail, headers={"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------- dependencies


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("invalid_token", "Authorization must be 'Bearer <token>'")
    return token.strip()


def _load_principal(request: Request, token: str) -> UserRow:
    claims = token_codec(request).verify(token, auth_config(request).clock_s())
    with _resources(request).pool.connection() as conn:
        user = get_user_by_subject(conn, claims["sub"])
    if user is None:
        raise _unauthorized("invalid_token", "the token's user no longer exists")
    request.state.user_row = user
    return user


def get_current_user(request: Request) -> Principal:
    token = _bearer(request)
    if token is None:
        raise _unauthorized("not_authenticated", "a bearer token is required")
    return _load_principal(request, token).principal()


def get_optional_user(request: Request) -> Principal | None:
    """The caller if they sent a token (a bad token is still refused), else None."""
    token = _bearer(request)
    return None if token is None else _load_principal(request, token).principal()


def require_role(minimum: Role) -> Callable[..., Principal]:
    """A dependency admitting `minimum` and higher roles: `Depends(require_role("editor"))`."""
    assert minimum in ROLE_RANK, minimum

    def dependency(principal: Annotated[Principal, Depends(get_current_user)]) -> Principal:
        if not principal.has_role(minimum):
            raise ProblemError(403, "forbidden", f"needs role {minimum} or higher")
        return principal

    dependency.__name__ = f"require_{minimum}"
    return dependency


def check_second_factor(request: Request, principal: Principal) -> None:
    """Refuse unless `X-TOTP` holds a fresh code of the principal's enrolled secret."""
    user: UserRow = request.state.user_row
    if user.totp_secret_enc is None:
        raise ProblemError(403, "totp_not_enrolled", "admin actions need an enrolled TOTP second factor")
    code = request.headers.get(TOTP_HEADER)
    if not code:
        raise _unauthorized("totp_required", f"admin actions need the {TOTP_HEADER} header")
    resources = _resources(request)
    secret = open_secret(resources.settings, user.id, user.totp_secret_enc)
    timecode = totp_matching_timecode(secret, code.strip(), auth_config(request).clock_s())
    if timecode is None:
        raise _unauthorized("totp_invalid", "wrong TOTP code")
    with resources.pool.connection() as conn:
        fresh = consume_totp(conn, principal.user_id, timecode)
    if not fresh:
        raise _unauthorized("totp_invalid", "TOTP code already used; wait for the next one")


def require_admin(minimum: Role = "admin") -> Callable[..., Principal]:
    """Role `minimum` (admin or super_admin) plus a valid, unused `X-TOTP` code."""
    assert minimum in ADMIN_ROLES, minimum
    role_check = require_role(minimum)

    # a default, not `Annotated`: postponed annotations cannot see the local `role_check`
    def dependency(request: Request, principal: Principal = Depends(role_check)) -> Principal:
        check_second_factor(request, principal)
        return principal

    dependency.__name__ = f"require_{minimum}_totp"
    return dependency


get_admin_user = require_admin("admin")
get_super_admin_user = require_admin("super_admin")

CurrentUser = Annotated[Principal, Depends(get_current_user)]
OptionalUser = Annotated[Principal | None, Depends(get_optional_user)]
EditorUser = Annotated[Principal, Depends(require_role("editor"))]
AdminUser = Annotated[Principal, Depends(get_admin_user)]
SuperAdminUser = Annotated[Principal, Depends(get_super_admin_user)]


# ---------------------------------------------------------------- CLI


def _cli_create_admin(args: argparse.Namespace) -> int:
    from emlib.settings import get_settings

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else args.password
    if not password:
        print("a password is required (--password-stdin)", file=sys.stderr)
        return 2
    resources = Resources(get_settings())
    try:
        principal, secret = create_user(resources, args.username, password, args.role, with_totp=True)
    except UsernameTakenError:
        print(f"username {args.username!r} is taken", file=sys.stderr)
        return 1
    except ProblemError as exc:
        print(f"{exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        resources.close()
    assert secret is not None
    uri = pyotp.TOTP(secret).provisioning_uri(name=principal.username, issuer_name=TOTP_ISSUER)
    # The secret is shown once: it is stored encrypted and never printed again.
    print(f"user_id={principal.user_id}\nrole={principal.role}\ntotp_secret={secret}\notpauth_uri={uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.auth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-admin", help="create a user with a role and an enrolled TOTP secret")
    create.add_argument("--username", required=True)
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    create.add_argument("--password", default="", help=argparse.SUPPRESS)  # tests only; shows in ps
    create.add_argument("--role", choices=ROLES, default="super_admin")
    args = parser.parse_args(argv)
    if args.command == "create-admin":
        return _cli_create_admin(args)
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
