"""The pure signing core: string to sign, every result code, the time window, nonces, rotation."""

from __future__ import annotations

import ast
import hashlib
import hmac
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import emlib.signing
from emlib.kv.base import NonceStore
from emlib.kv.memory import MemoryKeyValueStore
from emlib.settings import HmacKey
from emlib.signing import (
    NONCE_REUSED,
    SIGNATURE_INVALID,
    SIGNATURE_MISSING,
    TIMESTAMP_SKEW,
    UNKNOWN_KEY,
    Keyring,
    VerifiedCaller,
    VerifyFailure,
    sign,
    signed_headers,
    string_to_sign,
    verify,
)

SECRET = "s3cret-key-material-0001"
NOW_S = 1_800_000_000
NONCE = "abcdefghijklmnop-_0123"
PATH = "/api/v1/ingest?b=2&a=1"
BODY = '{"url": "https://example.com/ü"}'.encode()


@dataclass
class FakeClock:
    now_s: float = 1000.0

    def __call__(self) -> float:
        return self.now_s


class NonceLog:
    """A remember_nonce that counts calls (to prove when the nonce is or is not recorded)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.calls = 0

    def __call__(self, key_id: str, nonce: str) -> bool:
        self.calls += 1
        if (key_id, nonce) in self.seen:
            return False
        self.seen.add((key_id, nonce))
        return True


def keyring() -> Keyring:
    return Keyring([HmacKey(id="k1", secret=SECRET, created_at_s=0)])


def headers(
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    ts_s: int = NOW_S,
    nonce: str = NONCE,
    key_id: str = "k1",
    secret: str = SECRET,
) -> dict[str, str]:
    return signed_headers(key_id, secret, method, path, body, ts_s, nonce)


def check(
    hdrs: dict[str, str],
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    now_s: int = NOW_S,
    ring: Keyring | None = None,
    nonces: NonceLog | None = None,
) -> VerifiedCaller | VerifyFailure:
    return verify(ring or keyring(), method, path, hdrs, body, now_s, nonces or NonceLog())


def code(result: VerifiedCaller | VerifyFailure) -> str:
    return result.code if isinstance(result, VerifyFailure) else "ok"


def test_string_to_sign_layout() -> None:
    assert string_to_sign("post", "/x?q=1", 12, NONCE, b"\x00\xff") == f"POST|/x?q=1|12|{NONCE}|".encode() + (
        b"\x00\xff"
    )


def test_signature_is_hmac_sha256_hex_of_the_string_to_sign() -> None:
    message = f"GET|/a?b=c|{NOW_S}|{NONCE}|".encode()
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert sign(SECRET, "GET", "/a?b=c", NOW_S, NONCE, b"") == expected
    assert sign(SECRET.encode(), "GET", "/a?b=c", NOW_S, NONCE, b"") == expected


def test_valid_request_is_accepted() -> None:
    result = check(headers())
    assert result == VerifiedCaller(key_id="k1", timestamp_s=NOW_S, nonce=NONCE)


def test_header_names_are_case_insensitive() -> None:
    lowered = {k.lower(): v for k, v in headers().items()}
    assert code(check(lowered)) == "ok"


@pytest.mark.parametrize("missing", ["X-Key-Id", "X-Timestamp", "X-Nonce", "X-Signature"])
def test_missing_header(missing: str) -> None:
    hdrs = headers()
    del hdrs[missing]
    assert code(check(hdrs)) == SIGNATURE_MISSING
    hdrs[missing] = ""
    assert code(check(hdrs)) == SIGNATURE_MISSING


def test_unknown_key() -> None:
    assert code(check(headers(key_id="nobody"))) == UNKNOWN_KEY


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "PUT"),
        ("path", "/api/v1/ingest?a=1&b=2"),  # same query, other order
        ("path", "/api/v1/ingest"),  # query dropped
        ("path", "/api/v1/Ingest?b=2&a=1"),
        ("body", BODY + b" "),
        ("body", b""),
    ],
)
def test_tampering_is_detected(field: str, value: str | bytes) -> None:
    hdrs = headers()
    kwargs: dict[str, str | bytes] = {field: value}
    assert code(check(hdrs, **kwargs)) == SIGNATURE_INVALID  # type: ignore[arg-type]


def test_wrong_secret_and_wrong_timestamp_and_nonce_headers() -> None:
    assert code(check(headers(secret="another-secret-of-16+"))) == SIGNATURE_INVALID
    hdrs = headers()
    hdrs["X-Timestamp"] = str(NOW_S + 1)  # signed with NOW_S
    assert code(check(hdrs)) == SIGNATURE_INVALID
    hdrs = headers()
    hdrs["X-Nonce"] = "zzzzzzzzzzzzzzzzzzzz"
    assert code(check(hdrs)) == SIGNATURE_INVALID


@pytest.mark.parametrize("ts", ["abc", "-5", "+5", "1.5", " 1800000000", "1" * 16])
def test_malformed_timestamp_is_invalid(ts: str) -> None:
    hdrs = headers()
    hdrs["X-Timestamp"] = ts
    assert code(check(hdrs)) == SIGNATURE_INVALID


@pytest.mark.parametrize("nonce", ["short", "a" * 15, "a" * 65, "has space in it!!", "ünïcödé-nonce-xxxx"])
def test_malformed_nonce_is_invalid(nonce: str) -> None:
    hdrs = headers()
    hdrs["X-Nonce"] = nonce
    assert code(check(hdrs)) == SIGNATURE_INVALID


def test_nonce_length_bounds_are_accepted() -> None:
    for nonce in ("a" * 16, "Z" * 64):
        assert code(check(headers(nonce=nonce), nonces=NonceLog())) == "ok"


def test_signature_must_be_lowercase_hex() -> None:
    hdrs = headers()
    hdrs["X-Signature"] = hdrs["X-Signature"].upper()
    assert code(check(hdrs)) == SIGNATURE_INVALID
    hdrs["X-Signature"] = "00"
    assert code(check(hdrs)) == SIGNATURE_INVALID


def test_client_refuses_to_sign_with_a_bad_nonce() -> None:
    with pytest.raises(ValueError):
        signed_headers("k1", SECRET, "GET", "/", b"", NOW_S, "short")


@pytest.mark.parametrize(
    ("offset_s", "expected"),
    [
        (0, "ok"),
        (120, "ok"),
        (-120, "ok"),
        (121, TIMESTAMP_SKEW),
        (-121, TIMESTAMP_SKEW),
        (10**6, TIMESTAMP_SKEW),
    ],
)
def test_timestamp_window(offset_s: int, expected: str) -> None:
    # the client's clock is offset_s ahead of the server's
    assert code(check(headers(ts_s=NOW_S + offset_s), now_s=NOW_S)) == expected


def test_nonce_reuse_is_refused() -> None:
    nonces = NonceLog()
    assert code(check(headers(), nonces=nonces)) == "ok"
    assert code(check(headers(), nonces=nonces)) == NONCE_REUSED
    # another key may use the same nonce
    ring = Keyring(
        [
            HmacKey(id="k1", secret=SECRET, created_at_s=0),
            HmacKey(id="k2", secret=SECRET + "2", created_at_s=0),
        ]
    )
    assert code(check(headers(key_id="k2", secret=SECRET + "2"), ring=ring, nonces=nonces)) == "ok"


def test_nonce_is_recorded_only_after_the_signature_verifies() -> None:
    nonces = NonceLog()
    forged = headers(secret="attacker-guess-000000")
    assert code(check(forged, nonces=nonces)) == SIGNATURE_INVALID
    assert code(check(headers(ts_s=NOW_S + 500), nonces=nonces)) == TIMESTAMP_SKEW
    assert nonces.calls == 0
    assert code(check(headers(), nonces=nonces)) == "ok"  # the real client's nonce is still fresh


def test_nonce_window_with_the_kv_nonce_store_and_a_fake_clock() -> None:
    clock = FakeClock()
    store = NonceStore(MemoryKeyValueStore(clock=clock))
    ring = keyring()
    t0 = NOW_S

    def attempt(now_s: int) -> str:
        # a fresh timestamp each time, so only the nonce can refuse it
        return code(verify(ring, "POST", PATH, headers(ts_s=now_s), BODY, now_s, store))

    assert attempt(t0) == "ok"
    clock.now_s += 599
    assert attempt(t0 + 599) == NONCE_REUSED
    clock.now_s += 1  # 600 s: the nonce has expired
    assert attempt(t0 + 600) == "ok"
    assert attempt(t0 + 600) == NONCE_REUSED


class TestRotation:
    OLD_CREATED_S = 1_000
    NEW_CREATED_S = 1_700_000_000

    def ring(self) -> Keyring:
        # listed newest first on purpose: order comes from created_at_s
        return Keyring(
            [
                HmacKey(id="new", secret="new-secret-0123456789", created_at_s=self.NEW_CREATED_S),
                HmacKey(id="old", secret="old-secret-0123456789", created_at_s=self.OLD_CREATED_S),
            ]
        )

    def attempt(self, key_id: str, now_s: int) -> str:
        secret = f"{key_id}-secret-0123456789"
        hdrs = headers(key_id=key_id, secret=secret, ts_s=now_s)
        return code(check(hdrs, now_s=now_s, ring=self.ring()))

    def test_newest_key_signs(self) -> None:
        assert self.ring().signing_key.id == "new"
        assert "secret" not in repr(self.ring().signing_key)

    def test_old_key_accepted_for_24_hours_after_successor(self) -> None:
        start = self.NEW_CREATED_S
        assert self.attempt("old", start) == "ok"
        assert self.attempt("old", start + 23 * 3600 + 59 * 60) == "ok"
        assert self.attempt("old", start + 24 * 3600) == "ok"
        assert self.attempt("old", start + 24 * 3600 + 1) == UNKNOWN_KEY
        assert self.attempt("new", start + 24 * 3600 + 1) == "ok"
        assert self.attempt("new", start + 365 * 86400) == "ok"

    def test_chain_of_three_keys(self) -> None:
        ring = Keyring(
            [
                HmacKey(id="a", secret="a" * 16, created_at_s=0),
                HmacKey(id="b", secret="b" * 16, created_at_s=100),
                HmacKey(id="c", secret="c" * 16, created_at_s=200_000),
            ]
        )
        assert ring.signing_key.id == "c"
        day = 86400
        assert ring.lookup("a", 100 + day) is not None
        assert ring.lookup("a", 100 + day + 1) is None  # a expires relative to b, not c
        assert ring.lookup("b", 200_000 + day) is not None
        assert ring.lookup("b", 200_000 + day + 1) is None

    def test_keyring_refuses_duplicates_and_empty(self) -> None:
        with pytest.raises(ValueError):
            Keyring([])
        with pytest.raises(ValueError):
            Keyring([HmacKey(id="a", secret="a" * 16), HmacKey(id="a", secret="b" * 16)])


def test_signing_core_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(emlib.signing.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules, "the import scan found nothing"
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules - set(sys.stdlib_module_names)
    assert "time" not in modules and "random" not in modules and "secrets" not in modules
