"""The pure parts of functions.auth: input rules, roles, password hashing, TOTP matching,
secret sealing and HS256 token checks (no network, no database)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pyotp
import pytest
from cryptography.exceptions import InvalidTag

from emlib.problems import ProblemError
from emlib.settings import Settings
from functions import auth

NOW_S = 1_800_000_000.0
SECRET = "unit-test-jwt-secret-" + "0123456789abcdef" * 3  # 64+ bytes, long enough for HS512


def settings(**overrides: str) -> Settings:
    values = {"APP_ENV": "test", "JWT_SECRET": SECRET, **overrides}
    return Settings.model_validate(values)


def principal(role: auth.Role = "editor") -> auth.Principal:
    return auth.Principal("u-" + "ab" * 16, "alice", role)


@pytest.mark.parametrize("name", ["abc", "A_b-9", "x" * 32])
def test_good_usernames(name: str) -> None:
    assert auth.check_username(name) == name


@pytest.mark.parametrize("name", ["ab", "x" * 33, "has space", "émile", "a.b", "", "a\nb"])
def test_bad_usernames(name: str) -> None:
    with pytest.raises(ProblemError) as err:
        auth.check_username(name)
    assert (err.value.status, err.value.code) == (422, "invalid_username")


@pytest.mark.parametrize(
    ("password", "ok"), [("x" * 7, False), ("x" * 8, True), ("x" * 128, True), ("x" * 129, False)]
)
def test_password_length(password: str, ok: bool) -> None:
    if ok:
        assert auth.check_password(password) == password
    else:
        with pytest.raises(ProblemError) as err:
            auth.check_password(password)
        assert err.value.code == "invalid_password"


def test_role_order() -> None:
    assert principal("viewer").has_role("viewer")
    assert not principal("viewer").has_role("editor")
    assert principal("super_admin").has_role("admin")
    assert not principal("admin").has_role("super_admin")
    assert principal("admin").is_admin and principal("super_admin").is_admin
    assert not principal("editor").is_admin


def test_user_ids_fit_the_host_account_pattern() -> None:
    ids = {auth.new_user_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(auth.USER_ID_RE.fullmatch(i) for i in ids)


def test_password_hash_round_trip() -> None:
    stored = auth.hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert auth.verify_password(stored, "correct horse")
    assert not auth.verify_password(stored, "correct horsE")
    assert not auth.verify_password(None, "correct horse")
    assert not auth.verify_password("not-a-hash", "correct horse")
    assert not auth.needs_rehash(stored)


def test_totp_window_and_format() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    step = int(NOW_S) // 30
    assert auth.totp_matching_timecode(secret, totp.at(NOW_S), NOW_S) == step
    assert auth.totp_matching_timecode(secret, totp.at(NOW_S - 30), NOW_S) == step - 1
    assert auth.totp_matching_timecode(secret, totp.at(NOW_S + 30), NOW_S) == step + 1
    assert auth.totp_matching_timecode(secret, totp.at(NOW_S - 60), NOW_S) is None
    assert auth.totp_matching_timecode(secret, totp.at(NOW_S + 60), NOW_S) is None
    assert auth.totp_matching_timecode(secret, "12345", NOW_S) is None
    assert auth.totp_matching_timecode(secret, "abcdef", NOW_S) is None
    other = pyotp.TOTP(pyotp.random_base32()).at(NOW_S)
    if other != totp.at(NOW_S):  # one in a million they agree
        assert auth.totp_matching_timecode(secret, other, NOW_S) in (None, step - 1, step + 1)


def test_sealed_secret_round_trip_and_binding() -> None:
    s = settings()
    sealed = auth.seal_secret(s, "u-1", "JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert sealed != auth.seal_secret(s, "u-1", "JBSWY3DPEHPK3PXP")  # fresh nonce each time
    assert auth.open_secret(s, "u-1", sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(InvalidTag):  # copied onto another user's row: refused
        auth.open_secret(s, "u-2", sealed)
    with pytest.raises(InvalidTag):  # another key
        auth.open_secret(settings(AUDIT_HMAC_KEY="another-audit-key-0123456789"), "u-1", sealed)


def codec() -> auth.TokenCodec:
    return auth.TokenCodec(settings())


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


def test_minted_token_claims() -> None:
    token, ttl_s = codec().mint(principal(), NOW_S)
    claims = claims_of(token)
    assert ttl_s == 3600
    assert claims["sub"] == principal().user_id
    assert claims["role"] == "editor"
    assert (claims["iss"], claims["aud"]) == ("everything-market", "everything-market")
    assert (claims["iat"], claims["exp"]) == (int(NOW_S), int(NOW_S) + 3600)
    assert len(claims["jti"]) == 32
    assert claims_of(codec().mint(principal(), NOW_S)[0])["jti"] != claims["jti"]
    assert codec().verify(token, NOW_S + 3599)["sub"] == principal().user_id


def expect(code: str, token: str, now_s: float = NOW_S) -> None:
    with pytest.raises(ProblemError) as err:
        codec().verify(token, now_s)
    assert (err.value.status, err.value.code) == (401, code)


def test_expired_token() -> None:
    token, _ = codec().mint(principal(), NOW_S)
    expect("token_expired", token, NOW_S + 3600)


def sign(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def good_claims(**changes: Any) -> dict[str, Any]:
    claims = claims_of(codec().mint(principal(), NOW_S)[0])
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(sign(good_claims(), key="another-secret-0123456789abcdefghij"), id="forged"),
        pytest.param(sign(good_claims(aud="someone-else")), id="audience"),
        pytest.param(sign(good_claims(iss="someone-else")), id="issuer"),
        pytest.param(sign(good_claims(exp=None)), id="no-exp"),
        pytest.param(sign(good_claims(jti=None)), id="no-jti"),
        pytest.param(sign(good_claims(sub=None)), id="no-sub"),
        pytest.param(sign(good_claims(sub=42)), id="sub-not-string"),
        pytest.param(sign(good_claims(exp="tomorrow")), id="exp-not-int"),
        pytest.param(sign(good_claims(iat=int(NOW_S) + 600)), id="issued-in-future"),
        pytest.param(sign(good_claims(), algorithm="HS512"), id="other-hmac-alg"),
        pytest.param("not.a.token", id="malformed"),
        pytest.param("", id="empty"),
    ],
)
def test_refused_tokens(token: str) -> None:
    expect("invalid_token", token)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_refused() -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good_claims())}."
    expect("invalid_token", unsigned)
    # the same claims with the real signature pass, so the refusal is about `alg`
    assert codec().verify(sign(good_claims()), NOW_S)["sub"] == principal().user_id


def test_rs256_codec_cannot_mint() -> None:
    rs = auth.TokenCodec(settings(JWT_ALGORITHM="RS256", JWT_JWKS_URL="http://127.0.0.1:9/jwks.json"))
    assert not rs.can_mint
    with pytest.raises(AssertionError):
        rs.mint(principal(), NOW_S)
