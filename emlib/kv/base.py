"""The key-value port: nonce cache, rate limits, small hot values.

Production uses Upstash Redis (REST); one machine uses a PostgreSQL table, or process
memory where only one process uses it (design.md §4). Every adapter gives the same
guarantees, checked by one contract test class run against each:

- `set_if_absent` is atomic: among concurrent callers exactly one gets True.
- `incr` is atomic; counters are stored as ASCII decimal, so `get` returns e.g. b"5".
- `token_bucket` is atomic per key (one Lua script, one locked row, one mutex).
- A key past its TTL reads as absent everywhere, whatever the adapter's clean-up lag.

Token buckets use GCRA (the "generic cell rate algorithm"), which is a token bucket
stored as a single integer, the theoretical arrival time `tat_us`: each admitted unit of
cost pushes it forward by the emission interval, and a request is admitted while
`tat_us` stays within `capacity` intervals of now. Integer microseconds everywhere, so
the Python, SQL and Lua versions agree to the microsecond, and a bucket that has refilled
completely carries no state (its key may expire).

Exceptions:
    KeyValueError          (the backend failed or holds a value of the wrong kind)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from emlib.signing import NONCE_TTL_S

KEY_CHARS_MAX = 512


class KeyValueError(Exception):
    pass


@dataclass(frozen=True)
class BucketDecision:
    allowed: bool
    retry_after_ms: int
    new_tat_us: int
    # how long the state matters: after this the bucket is full again and may be forgotten
    ttl_ms: int


def check_key(key: str) -> str:
    if not key or len(key) > KEY_CHARS_MAX:
        raise ValueError(f"kv key must be 1-{KEY_CHARS_MAX} characters")
    return key


def check_ttl(ttl_s: int | None) -> int | None:
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError("ttl_s must be positive (or None for no expiry)")
    return ttl_s


def emission_interval_us(refill_per_s: float) -> int:
    """Microseconds per token; rounded up so a bucket never refills faster than asked."""
    if not refill_per_s > 0:
        raise ValueError("refill_per_s must be positive")
    return max(1, math.ceil(1_000_000 / refill_per_s))


def check_bucket(capacity: int, cost: int) -> None:
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    if not 1 <= cost <= capacity:
        raise ValueError("cost must be between 1 and capacity")


def gcra(tat_us: int | None, now_ms: int, capacity: int, interval_us: int, cost: int) -> BucketDecision:
    """One token-bucket step (pure). `tat_us` None means a full bucket.

    The SQL in postgres.py and the Lua in upstash.py are line-by-line copies of this.
    """
    now_us = now_ms * 1000
    base_us = now_us if tat_us is None else max(tat_us, now_us)
    new_tat_us = base_us + cost * interval_us
    allow_at_us = new_tat_us - capacity * interval_us
    if allow_at_us <= now_us:
        return BucketDecision(True, 0, new_tat_us, -(-(new_tat_us - now_us) // 1000))
    # refused: the state is unchanged (refusal implies tat_us > now, as cost <= capacity)
    return BucketDecision(False, -(-(allow_at_us - now_us) // 1000), base_us, -(-(base_us - now_us) // 1000))


class KeyValueStore(ABC):
    """Bytes by string key, with optional expiry in whole seconds."""

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        """Store `value`; `ttl_s` None means no expiry (and clears an earlier one)."""

    @abstractmethod
    def set_if_absent(self, key: str, value: bytes, ttl_s: int | None) -> bool:
        """Atomically store `value` only if the key is absent (or expired); True if stored."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Deleting an absent key is not an error."""

    @abstractmethod
    def incr(self, key: str, amount: int = 1, ttl_s: int | None = None) -> int:
        """Atomically add `amount` (an absent key counts as 0) and return the new value.

        `ttl_s` is applied only when the counter has no expiry yet, i.e. when this call
        creates it: a fixed window that later increments do not extend.
        """

    @abstractmethod
    def token_bucket(
        self, key: str, capacity: int, refill_per_s: float, cost: int = 1, *, now_ms: int
    ) -> tuple[bool, int]:
        """Take `cost` tokens from the bucket at `key` if it holds them.

        Returns `(allowed, retry_after_ms)`; `retry_after_ms` is 0 when allowed, else how
        long until the same request would be allowed (always positive). `now_ms` comes
        from the caller's clock; a clock that steps back never refills a bucket. Bucket
        state lives in its own key space, separate from `get`/`set` keys.
        """

    @abstractmethod
    def ping(self) -> None:
        """Raise when the backend cannot be reached (used by /ready)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections the adapter owns (a pool passed in is the caller's)."""


class NonceStore:
    """The nonce memory for `emlib.signing.verify`: `(key_id, nonce)` seen in the last 10 min.

    Usable directly as verify's `remember_nonce` callable.
    """

    def __init__(self, kv: KeyValueStore, ttl_s: int = NONCE_TTL_S, prefix: str = "nonce:") -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.prefix = prefix

    def __call__(self, key_id: str, nonce: str) -> bool:
        return self.remember(key_id, nonce)

    def remember(self, key_id: str, nonce: str) -> bool:
        """True if the pair is new (and is now recorded); False for a replay."""
        return self.kv.set_if_absent(f"{self.prefix}{key_id}:{nonce}", b"1", self.ttl_s)
