"""HMAC request signing between services, workers and the runner (contract.md, design §6.8).

The problem: a service must know that a request comes from a holder of a shared secret,
that nobody changed a byte of it on the way (method, path, query or body), and that it is
not a replay of an old request. This module is the pure core of that check: standard
library only, no clock, randomness or I/O. The time and the nonce memory are passed in;
`emlib.signing_http` wires them to FastAPI, httpx and requests.

Wire format:

    X-Key-Id: <key id>   X-Timestamp: <unix seconds>   X-Nonce: <16-64 of [A-Za-z0-9_-]>
    X-Signature: lowercase hex HMAC-SHA256(secret, METHOD|PATH|TS|NONCE|BODY)

PATH is the path plus `?query` exactly as sent; BODY the raw bytes (empty for GET).

Result codes (all answered 401), in the order they are checked:

1. `signature_missing`: one of the four headers is absent or empty.
2. `unknown_key`: the key id is not in the keyring, or it is a rotated-out key whose
   successor was added more than 24 h ago (an expired key is not distinguished from an
   unknown one: the caller's fix is the same, and it tells an attacker nothing).
3. `signature_invalid` for a timestamp that is not plain decimal digits, then
   `timestamp_skew` when |now - ts| > 120 s (exactly 120 s is accepted).
4. `signature_invalid`: the nonce is not 16-64 of `[A-Za-z0-9_-]`, the signature is not
   64 lowercase hex digits, or it does not match (compared in constant time).
5. `nonce_reused`: this key id already used this nonce in the last 10 minutes. The nonce
   is recorded only after the signature verified, so a forger cannot burn a real
   client's nonces. The window is longer than the ±120 s timestamp window, so a replay
   is refused either as a reused nonce or as a stale timestamp.

Key rotation: keys carry `created_at_s`; the newest signs. A key stays accepted until
24 h (inclusive) after the `created_at_s` of the next newer key, then reads as unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

HEADER_KEY_ID: Final = "X-Key-Id"
HEADER_TIMESTAMP: Final = "X-Timestamp"
HEADER_NONCE: Final = "X-Nonce"
HEADER_SIGNATURE: Final = "X-Signature"

TIMESTAMP_SKEW_S_MAX: Final = 120
NONCE_TTL_S: Final = 600
KEY_OVERLAP_S: Final = 24 * 3600

SIGNATURE_MISSING: Final = "signature_missing"
UNKNOWN_KEY: Final = "unknown_key"
TIMESTAMP_SKEW: Final = "timestamp_skew"
NONCE_REUSED: Final = "nonce_reused"
SIGNATURE_INVALID: Final = "signature_invalid"

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,15}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")

RememberNonce = Callable[[str, str], bool]
"""`remember(key_id, nonce) -> bool`: atomically record the pair for NONCE_TTL_S and return
True if it was not already recorded (False means a replay)."""


class KeyLike(Protocol):
    """What a keyring needs from a key; `emlib.settings.HmacKey` fits."""

    @property
    def id(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def created_at_s(self) -> int: ...


def string_to_sign(method: str, path_with_query: str, ts_s: int, nonce: str, body: bytes) -> bytes:
    """`METHOD|PATH|TS|NONCE|` followed by the raw body bytes."""
    return f"{method.upper()}|{path_with_query}|{ts_s}|{nonce}|".encode() + body


def sign(secret: str | bytes, method: str, path_with_query: str, ts_s: int, nonce: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of `string_to_sign(...)`."""
    key = secret.encode() if isinstance(secret, str) else secret
    message = string_to_sign(method, path_with_query, ts_s, nonce, body)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(
    key_id: str, secret: str | bytes, method: str, path_with_query: str, body: bytes, ts_s: int, nonce: str
) -> dict[str, str]:
    """The four headers a client adds to a request it is about to send."""
    if not _NONCE.match(nonce):
        raise ValueError("nonce must be 16-64 of [A-Za-z0-9_-]")
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(ts_s),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, path_with_query, ts_s, nonce, body),
    }


@dataclass(frozen=True)
class SigningKey:
    id: str
    secret: bytes
    created_at_s: int
    # None for the newest key; else the moment it stops being accepted.
    accepted_until_s: int | None

    def __repr__(self) -> str:  # never print a secret
        return f"SigningKey(id={self.id!r}, created_at_s={self.created_at_s})"


class Keyring:
    """The keys a service accepts, ordered by `created_at_s`; the newest one signs."""

    def __init__(self, keys: Iterable[KeyLike], overlap_s: int = KEY_OVERLAP_S) -> None:
        # stable sort: among equal created_at_s the later-listed key counts as newer
        ordered = sorted(keys, key=lambda k: k.created_at_s)
        if not ordered:
            raise ValueError("a keyring needs at least one key")
        ids = [k.id for k in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate key id in keyring")
        self._keys: dict[str, SigningKey] = {}
        for index, key in enumerate(ordered):
            successor = ordered[index + 1] if index + 1 < len(ordered) else None
            self._keys[key.id] = SigningKey(
                id=key.id,
                secret=key.secret.encode(),
                created_at_s=key.created_at_s,
                accepted_until_s=None if successor is None else successor.created_at_s + overlap_s,
            )
        self._signing = self._keys[ordered[-1].id]

    @property
    def signing_key(self) -> SigningKey:
        return self._signing

    def lookup(self, key_id: str, now_s: int) -> SigningKey | None:
        """The key to verify with, or None when unknown or rotated out at `now_s`."""
        key = self._keys.get(key_id)
        if key is None or (key.accepted_until_s is not None and now_s > key.accepted_until_s):
            return None
        return key

    def key_ids(self) -> list[str]:
        return list(self._keys)


@dataclass(frozen=True)
class VerifiedCaller:
    key_id: str
    timestamp_s: int
    nonce: str


@dataclass(frozen=True)
class VerifyFailure:
    code: str
    detail: str


def verify(
    keyring: Keyring,
    method: str,
    path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    now_s: int,
    remember_nonce: RememberNonce,
) -> VerifiedCaller | VerifyFailure:
    """Check one request; `headers` may be any mapping (names are matched case-insensitively)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    key_id = lowered.get(HEADER_KEY_ID.lower(), "")
    ts_text = lowered.get(HEADER_TIMESTAMP.lower(), "")
    nonce = lowered.get(HEADER_NONCE.lower(), "")
    signature = lowered.get(HEADER_SIGNATURE.lower(), "")
    missing = [
        name
        for name, value in (
            (HEADER_KEY_ID, key_id),
            (HEADER_TIMESTAMP, ts_text),
            (HEADER_NONCE, nonce),
            (HEADER_SIGNATURE, signature),
        )
        if not value
    ]
    if missing:
        return VerifyFailure(SIGNATURE_MISSING, f"missing header(s): {', '.join(missing)}")

    key = keyring.lookup(key_id, now_s)
    if key is None:
        return VerifyFailure(UNKNOWN_KEY, "unknown or expired key id")

    if not _TIMESTAMP.match(ts_text):
        return VerifyFailure(SIGNATURE_INVALID, f"{HEADER_TIMESTAMP} must be unix seconds")
    ts_s = int(ts_text)
    if abs(now_s - ts_s) > TIMESTAMP_SKEW_S_MAX:
        return VerifyFailure(
            TIMESTAMP_SKEW, f"timestamp differs from server time by more than {TIMESTAMP_SKEW_S_MAX} s"
        )

    if not _NONCE.match(nonce):
        return VerifyFailure(SIGNATURE_INVALID, f"{HEADER_NONCE} must be 16-64 of [A-Za-z0-9_-]")
    if not _SIGNATURE.match(signature):
        return VerifyFailure(SIGNATURE_INVALID, f"{HEADER_SIGNATURE} must be 64 lowercase hex digits")
    expected = sign(key.secret, method, path_with_query, ts_s, nonce, body)
    if not hmac.compare_digest(expected, signature):
        return VerifyFailure(SIGNATURE_INVALID, "signature does not match")

    if not remember_nonce(key.id, nonce):
        return VerifyFailure(NONCE_REUSED, f"nonce already used within {NONCE_TTL_S} s")
    return VerifiedCaller(key_id=key.id, timestamp_s=ts_s, nonce=nonce)
