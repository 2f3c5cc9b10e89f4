"""Process-memory key-value store, for a single process (tests, one-process local runs).

Thread-safe behind one lock. Expiry follows an injectable monotonic-style clock (seconds,
float), so tests move time instead of sleeping. Expired entries are dropped when touched
and by `purge_expired()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from emlib.kv.base import (
    KeyValueError,
    KeyValueStore,
    check_bucket,
    check_key,
    check_ttl,
    emission_interval_us,
    gcra,
)


class MemoryKeyValueStore(KeyValueStore):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (value, expires_at or None)
        self._items: dict[str, tuple[bytes, float | None]] = {}
        self._buckets: dict[str, tuple[int, int]] = {}  # key -> (tat_us, expires_at_ms)

    def _live(self, key: str, now: float) -> tuple[bytes, float | None] | None:
        item = self._items.get(key)
        if item is not None and item[1] is not None and item[1] <= now:
            del self._items[key]
            return None
        return item

    def _expiry(self, ttl_s: int | None, now: float) -> float | None:
        check_ttl(ttl_s)
        return None if ttl_s is None else now + ttl_s

    def get(self, key: str) -> bytes | None:
        check_key(key)
        with self._lock:
            item = self._live(key, self._clock())
            return None if item is None else item[0]

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        check_key(key)
        with self._lock:
            now = self._clock()
            self._items[key] = (bytes(value), self._expiry(ttl_s, now))

    def set_if_absent(self, key: str, value: bytes, ttl_s: int | None) -> bool:
        check_key(key)
        with self._lock:
            now = self._clock()
            if self._live(key, now) is not None:
                return False
            self._items[key] = (bytes(value), self._expiry(ttl_s, now))
            return True

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._items.pop(key, None)

    def incr(self, key: str, amount: int = 1, ttl_s: int | None = None) -> int:
        check_key(key)
        with self._lock:
            now = self._clock()
            item = self._live(key, now)
            if item is None:
                current, expires_at = 0, self._expiry(ttl_s, now)
            else:
                try:
                    current = int(item[0].decode("ascii"))
                except ValueError as exc:
                    raise KeyValueError(f"value at {key!r} is not an integer") from exc
                expires_at = item[1] if item[1] is not None else self._expiry(ttl_s, now)
            new = current + amount
            self._items[key] = (str(new).encode("ascii"), expires_at)
            return new

    def token_bucket(
        self, key: str, capacity: int, refill_per_s: float, cost: int = 1, *, now_ms: int
    ) -> tuple[bool, int]:
        check_key(key)
        check_bucket(capacity, cost)
        interval_us = emission_interval_us(refill_per_s)
        with self._lock:
            state = self._buckets.get(key)
            tat_us = None if state is None or state[1] <= now_ms else state[0]
            decision = gcra(tat_us, now_ms, capacity, interval_us, cost)
            self._buckets[key] = (decision.new_tat_us, now_ms + decision.ttl_ms)
            return decision.allowed, decision.retry_after_ms

    def ping(self) -> None:
        return None

    def purge_expired(self, now_ms: int | None = None) -> int:
        """Drop expired entries (and, given the bucket clock's `now_ms`, full buckets)."""
        with self._lock:
            now = self._clock()
            dead = [k for k, (_, exp) in self._items.items() if exp is not None and exp <= now]
            for k in dead:
                del self._items[k]
            if now_ms is not None:
                full = [k for k, (_, exp_ms) in self._buckets.items() if exp_ms <= now_ms]
                for k in full:
                    del self._buckets[k]
                return len(dead) + len(full)
            return len(dead)
