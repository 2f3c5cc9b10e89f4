"""Accounts: register, log in, who am I, TOTP enrolment, and role management.

Registration funds the play-money starting balance through the orderbook host's deposit
command *inside* the transaction that inserts the user: the row commits only after the
host confirmed the deposit. If the host refuses or cannot be reached, the transaction
rolls back and the caller gets the host's error (503 `orderbook_unavailable`), so there
is never a user without money, and the username stays free for a retry. A deposit whose
answer was lost leaves play money on an account id nobody holds (ids are random and
never reused), which loses nothing.

Login and register share a per-IP token bucket (429 `rate_limited` + `Retry-After`).
Codes and examples: docs/specs/auth.md.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

import pyotp
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from emlib.problems import ProblemError
from functions import auth
from functions.auth import CurrentUser, Principal, Role, SuperAdminUser
from functions.deps import OrderbookDep, ResourcesDep
from functions.orderbook_client import OrderbookError

router = APIRouter(tags=["auth"])


def limit_by_ip(request: Request, resources: ResourcesDep) -> None:
    """Per-IP token bucket shared by login and register (brute force, sign-up spam)."""
    config = auth.auth_config(request)
    ip = request.client.host if request.client else "unknown"
    allowed, retry_after_ms = resources.kv.token_bucket(
        f"auth-ip:{ip}",
        config.rate_capacity,
        config.rate_per_min / 60.0,
        now_ms=int(config.clock_s() * 1000),
    )
    if not allowed:
        retry_after_s = max(1, math.ceil(retry_after_ms / 1000))
        raise ProblemError(
            429,
            "rate_limited",
            f"too many login/register attempts from this address; retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


IpLimited = Depends(limit_by_ip)


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(Closed):
    username: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class UserOut(BaseModel):
    user_id: str
    username: str
    role: Role
    kind: str
    totp_enabled: bool


class Registered(UserOut):
    balance_minor: int


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int
    user: UserOut


class MeOut(UserOut):
    created_at: datetime
    # the host's view: cash_minor, reserved_minor, positions, open_orders; None when the
    # host has no account yet or cannot be reached (then `account_error` says which)
    account: dict[str, Any] | None
    account_error: str | None = None


class TotpEnrolment(BaseModel):
    secret: str
    otpauth_uri: str


class TotpCode(Closed):
    code: str = Field(max_length=16)


class TotpConfirmed(BaseModel):
    totp_enabled: bool


class RoleChange(Closed):
    role: Role
    reason: str = Field(min_length=1, max_length=500)


class RoleChanged(UserOut):
    previous_role: Role
    audit_event_id: str


def _user_out(p: Principal) -> UserOut:
    return UserOut(**p.public())


@router.post("/api/v1/auth/register", status_code=201, dependencies=[IpLimited])
def register(
    body: Credentials, request: Request, resources: ResourcesDep, orderbook: OrderbookDep
) -> Registered:
    """Create a user (role `editor`) funded with the play-money starting balance."""
    username = auth.check_username(body.username)
    password = auth.check_password(body.password)
    amount_minor = auth.auth_config(request).starting_balance_minor
    password_hash = auth.hash_password(password)  # before the transaction: it is slow
    user_id = auth.new_user_id()
    try:
        with resources.pool.connection() as conn, conn.transaction():
            user = auth.insert_user(conn, user_id, username, password_hash, auth.DEFAULT_ROLE)
            if amount_minor > 0:
                orderbook.deposit(user_id, amount_minor)  # raises: the insert rolls back
    except auth.UsernameTakenError as exc:
        raise ProblemError(409, "username_taken", f"username {username!r} is taken") from exc
    return Registered(**user.principal().public(), balance_minor=amount_minor)


@router.post("/api/v1/auth/login", dependencies=[IpLimited])
def login(body: Credentials, request: Request, resources: ResourcesDep) -> LoginOut:
    """Exchange a username and password for a bearer token."""
    codec = auth.token_codec(request)
    if not codec.can_mint:
        raise ProblemError(409, "external_login_required", "sign in through the identity provider")
    bad = ProblemError(401, "invalid_credentials", "unknown username or wrong password")
    if not 1 <= len(body.password) <= auth.PASSWORD_CHARS_MAX or not auth.USERNAME_RE.fullmatch(
        body.username
    ):
        auth.verify_password(None, "x")  # same cost as a real miss
        raise bad
    with resources.pool.connection() as conn:
        user = auth.get_user_by_username(conn, body.username)
    if not auth.verify_password(user.password_hash if user else None, body.password) or user is None:
        raise bad
    assert user.password_hash is not None
    if auth.needs_rehash(user.password_hash):
        with resources.pool.connection() as conn:
            conn.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s",
                (auth.hash_password(body.password), user.id),
            )
    principal = user.principal()
    token, ttl_s = codec.mint(principal, auth.auth_config(request).clock_s())
    return LoginOut(access_token=token, expires_in=ttl_s, user=_user_out(principal))


@router.get("/api/v1/me")
def me(principal: CurrentUser, request: Request, orderbook: OrderbookDep) -> MeOut:
    """The caller, with balances and positions from the orderbook host."""
    user: auth.UserRow = request.state.user_row
    account: dict[str, Any] | None = None
    account_error: str | None = None
    try:
        account = orderbook.account(principal.user_id)
    except OrderbookError as exc:
        account_error = exc.code  # unknown_account, orderbook_unavailable...
    return MeOut(
        **principal.public(), created_at=user.created_at, account=account, account_error=account_error
    )


@router.post("/api/v1/auth/totp/enroll")
def totp_enroll(principal: CurrentUser, request: Request, resources: ResourcesDep) -> TotpEnrolment:
    """Start TOTP enrolment: a new secret, shown only in this answer. Confirm it with a code."""
    user: auth.UserRow = request.state.user_row
    if user.totp_secret_enc is not None:
        raise ProblemError(409, "totp_already_enrolled", "a TOTP secret is already confirmed for this user")
    secret = pyotp.random_base32()
    sealed = auth.seal_secret(resources.settings, user.id, secret)
    with resources.pool.connection() as conn:
        conn.execute(
            "UPDATE users SET totp_pending_enc = %s, updated_at = now() "
            "WHERE id = %s AND totp_secret_enc IS NULL",
            (sealed, user.id),
        )
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=auth.TOTP_ISSUER)
    return TotpEnrolment(secret=secret, otpauth_uri=uri)


@router.post("/api/v1/auth/totp/confirm")
def totp_confirm(
    body: TotpCode, principal: CurrentUser, request: Request, resources: ResourcesDep
) -> TotpConfirmed:
    """Finish enrolment with a current code of the new secret."""
    user: auth.UserRow = request.state.user_row
    if user.totp_secret_enc is not None:
        raise ProblemError(409, "totp_already_enrolled", "a TOTP secret is already confirmed for this user")
    if user.totp_pending_enc is None:
        raise ProblemError(409, "totp_not_pending", "call /api/v1/auth/totp/enroll first")
    secret = auth.open_secret(resources.settings, user.id, user.totp_pending_enc)
    timecode = auth.totp_matching_timecode(secret, body.code.strip(), auth.auth_config(request).clock_s())
    if timecode is None:
        raise ProblemError(422, "totp_invalid", "wrong TOTP code")
    with resources.pool.connection() as conn, conn.transaction():
        moved = conn.execute(
            "UPDATE users SET totp_secret_enc = totp_pending_enc, totp_pending_enc = NULL, "
            "updated_at = now() WHERE id = %s AND totp_pending_enc = %s AND totp_secret_enc IS NULL "
            "RETURNING 1",
            (user.id, user.totp_pending_enc),
        ).fetchone()
        if moved is None:  # a concurrent enrol or confirm got there first
            raise ProblemError(409, "totp_not_pending", "enrolment changed; enrol again")
        # the confirming code may not then be replayed as an admin code
        auth.consume_totp(conn, user.id, timecode)
    return TotpConfirmed(totp_enabled=True)


@router.post("/api/v1/admin/users/{user_id}/role", tags=["admin"])
def set_role(
    user_id: Annotated[str, Path(pattern=auth.USER_ID_RE.pattern)],
    body: RoleChange,
    actor: SuperAdminUser,
    resources: ResourcesDep,
) -> RoleChanged:
    """Change a user's role (super_admin + X-TOTP). The change and its audit event commit
    together. Nobody changes their own role, so a super_admin always remains."""
    if user_id == actor.user_id:
        raise ProblemError(409, "cannot_change_own_role", "another super_admin must change your role")
    with resources.pool.connection() as conn, conn.transaction():
        row = conn.execute("SELECT role FROM users WHERE id = %s FOR UPDATE", (user_id,)).fetchone()
        if row is None:
            raise ProblemError(404, "user_not_found", f"no user {user_id}")
        previous: Role = row[0]
        conn.execute("UPDATE users SET role = %s, updated_at = now() WHERE id = %s", (body.role, user_id))
        user = auth.get_user(conn, user_id)
        assert user is not None
        event = resources.audit_log().append(
            actor=actor.user_id,
            action="set_role",
            target=user_id,
            payload={
                "from": previous,
                "to": body.role,
                "reason": body.reason,
                "actor_username": actor.username,
            },
            conn=conn,
        )
    return RoleChanged(**user.principal().public(), previous_role=previous, audit_event_id=event.id)
