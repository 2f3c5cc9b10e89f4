"""One contract for the key-value port, run against every adapter.

Memory runs on a fake clock; PostgreSQL (the real embedded server) and Upstash (the
`upstash-redis` client against a local server speaking its REST protocol over a real
redis-server) run on real time, so their expiry test sleeps once for just over a second.
Token buckets take the caller's `now_ms`, so no adapter sleeps for those.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from psycopg_pool import ConnectionPool

from emlib.db import make_pool
from emlib.kv import KeyValueError, KeyValueStore, NonceStore, open_kv
from emlib.kv.base import emission_interval_us, gcra
from emlib.kv.memory import MemoryKeyValueStore
from emlib.kv.postgres import PostgresKeyValueStore
from emlib.kv.upstash import UpstashKeyValueStore
from emlib.settings import Settings
from tests.support.redis_server import redis_server_fixture  # noqa: F401 - fixture `redis_server`
from tests.support.upstash_server import UpstashServer, upstash_server_fixture  # noqa: F401

T = TypeVar("T")
THREADS = 16
T0_MS = 1_800_000_000_000


def race(n: int, action: Callable[[], T]) -> list[T]:
    """Run `action` in n threads released at the same instant."""
    barrier = threading.Barrier(n)

    def run() -> T:
        barrier.wait()
        return action()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: run(), range(n)))


@dataclass
class FakeClock:
    now_s: float = 1000.0

    def __call__(self) -> float:
        return self.now_s


class KeyValueContract(ABC):
    @abstractmethod
    def advance(self, seconds: float) -> None:
        """Let `seconds` pass for TTL purposes (move a fake clock, or sleep)."""

    # --- values ---------------------------------------------------------------------------

    def test_get_missing_is_none(self, kv: KeyValueStore) -> None:
        assert kv.get("absent") is None

    def test_round_trip_binary_and_empty(self, kv: KeyValueStore) -> None:
        every_byte = bytes(range(256)) * 3
        kv.set("bin", every_byte)
        kv.set("empty", b"")
        kv.set("text", "Zürich ✓".encode())
        assert kv.get("bin") == every_byte
        assert kv.get("empty") == b""
        assert kv.get("text") == "Zürich ✓".encode()

    def test_keys_are_opaque_strings(self, kv: KeyValueStore) -> None:
        for key in ("a:b:c", "with space", "ünï", "x" * 300, "nonce:k1:abc_-"):
            kv.set(key, key.encode())
        for key in ("a:b:c", "with space", "ünï", "x" * 300, "nonce:k1:abc_-"):
            assert kv.get(key) == key.encode()

    def test_overwrite_and_delete(self, kv: KeyValueStore) -> None:
        kv.set("k", b"1")
        kv.set("k", b"2")
        assert kv.get("k") == b"2"
        kv.delete("k")
        assert kv.get("k") is None
        kv.delete("k")  # idempotent
        kv.delete("never-set")

    def test_set_if_absent(self, kv: KeyValueStore) -> None:
        assert kv.set_if_absent("once", b"first", 60) is True
        assert kv.set_if_absent("once", b"second", 60) is False
        assert kv.get("once") == b"first"
        assert kv.set_if_absent("forever", b"x", None) is True
        assert kv.set_if_absent("forever", b"y", None) is False
        kv.delete("once")
        assert kv.set_if_absent("once", b"third", 60) is True
        assert kv.get("once") == b"third"

    def test_expiry(self, kv: KeyValueStore) -> None:
        kv.set("short", b"v", ttl_s=1)
        kv.set("long", b"v", ttl_s=100)
        kv.set("none", b"v")
        kv.set("cleared", b"v", ttl_s=1)
        kv.set("cleared", b"v2")  # a set without ttl removes the earlier expiry
        assert kv.set_if_absent("nonce", b"1", 1) is True
        assert kv.incr("window", 1, ttl_s=1) == 1
        assert kv.incr("window", 1, ttl_s=100) == 2  # does not extend the window
        assert kv.get("short") == b"v"

        self.advance(1.1)

        assert kv.get("short") is None
        assert kv.get("long") == b"v"
        assert kv.get("none") == b"v"
        assert kv.get("cleared") == b"v2"
        assert kv.set_if_absent("nonce", b"2", 1) is True  # expired counts as absent
        assert kv.get("nonce") == b"2"
        assert kv.incr("window", 1, ttl_s=100) == 1  # a new window
        assert kv.get("window") == b"1"

    def test_invalid_arguments(self, kv: KeyValueStore) -> None:
        with pytest.raises(ValueError):
            kv.set("", b"x")
        with pytest.raises(ValueError):
            kv.set("k", b"x", ttl_s=0)
        with pytest.raises(ValueError):
            kv.set_if_absent("k", b"x", -1)
        with pytest.raises(ValueError):
            kv.get("k" * 513)

    def test_set_if_absent_is_atomic(self, kv: KeyValueStore) -> None:
        for round_ in range(3):
            results = race(THREADS, functools.partial(kv.set_if_absent, f"race-{round_}", b"x", 60))
            assert results.count(True) == 1, results

    # --- counters -------------------------------------------------------------------------

    def test_incr(self, kv: KeyValueStore) -> None:
        assert kv.incr("n") == 1
        assert kv.incr("n", 10) == 11
        assert kv.incr("n", -20) == -9
        assert kv.get("n") == b"-9"
        kv.set("preset", b"41")
        assert kv.incr("preset") == 42
        kv.set("text", b"not a number")
        with pytest.raises(KeyValueError):
            kv.incr("text")
        assert kv.get("text") == b"not a number"

    def test_incr_is_atomic(self, kv: KeyValueStore) -> None:
        def ten() -> int:
            return max(kv.incr("shared") for _ in range(10))

        results = race(THREADS, ten)
        assert kv.get("shared") == str(THREADS * 10).encode()
        assert max(results) == THREADS * 10

    # --- token buckets --------------------------------------------------------------------

    def test_bucket_refuses_beyond_capacity_then_refills(self, kv: KeyValueStore) -> None:
        t = T0_MS
        assert [kv.token_bucket("api", 3, 1.0, now_ms=t) for _ in range(3)] == [(True, 0)] * 3
        assert kv.token_bucket("api", 3, 1.0, now_ms=t) == (False, 1000)
        assert kv.token_bucket("api", 3, 1.0, now_ms=t + 999) == (False, 1)
        assert kv.token_bucket("api", 3, 1.0, now_ms=t + 1000) == (True, 0)
        assert kv.token_bucket("api", 3, 1.0, now_ms=t + 1000) == (False, 1000)
        # refusals do not consume: after 2 s two more are allowed
        assert kv.token_bucket("api", 3, 1.0, now_ms=t + 3000) == (True, 0)
        assert kv.token_bucket("api", 3, 1.0, now_ms=t + 3000) == (True, 0)
        assert kv.token_bucket("api", 3, 1.0, now_ms=t + 3000)[0] is False

    def test_bucket_is_full_after_idling_but_not_beyond_capacity(self, kv: KeyValueStore) -> None:
        t = T0_MS
        assert kv.token_bucket("idle", 2, 10.0, now_ms=t)[0]
        later = t + 3_600_000
        assert [kv.token_bucket("idle", 2, 10.0, now_ms=later)[0] for _ in range(3)] == [True, True, False]

    def test_bucket_cost_and_fractional_rate(self, kv: KeyValueStore) -> None:
        t = T0_MS
        assert kv.token_bucket("cost", 10, 2.0, cost=4, now_ms=t) == (True, 0)
        assert kv.token_bucket("cost", 10, 2.0, cost=4, now_ms=t) == (True, 0)
        assert kv.token_bucket("cost", 10, 2.0, cost=4, now_ms=t) == (False, 1000)  # 2 left, 2 more at 2/s
        assert kv.token_bucket("cost", 10, 2.0, cost=2, now_ms=t) == (True, 0)
        assert kv.token_bucket("slow", 1, 0.5, now_ms=t) == (True, 0)
        assert kv.token_bucket("slow", 1, 0.5, now_ms=t + 1) == (False, 1999)
        with pytest.raises(ValueError):
            kv.token_bucket("cost", 3, 1.0, cost=4, now_ms=t)
        with pytest.raises(ValueError):
            kv.token_bucket("cost", 3, 0.0, now_ms=t)

    def test_bucket_clock_stepping_back_never_refills(self, kv: KeyValueStore) -> None:
        t = T0_MS
        assert kv.token_bucket("skew", 1, 1.0, now_ms=t) == (True, 0)
        assert kv.token_bucket("skew", 1, 1.0, now_ms=t - 5000) == (False, 6000)

    def test_buckets_and_values_do_not_collide(self, kv: KeyValueStore) -> None:
        kv.set("same", b"value")
        assert kv.token_bucket("same", 1, 1.0, now_ms=T0_MS) == (True, 0)
        assert kv.get("same") == b"value"
        assert kv.token_bucket("other", 1, 1.0, now_ms=T0_MS) == (True, 0)

    def test_bucket_is_atomic(self, kv: KeyValueStore) -> None:
        results = race(THREADS, lambda: kv.token_bucket("hot", 5, 1.0, now_ms=T0_MS))
        assert sum(allowed for allowed, _ in results) == 5
        assert {retry for allowed, retry in results if not allowed} == {1000}

    def test_bucket_matches_the_reference_step(self, kv: KeyValueStore) -> None:
        """A random walk compared decision by decision with the pure `gcra` step."""
        rng = random.Random(7)
        capacity, rate = 4, 3.0
        interval_us = emission_interval_us(rate)
        tat_us: int | None = None
        now = T0_MS
        for _ in range(60):
            now += rng.choice([0, 0, 1, 50, 333, 334, 1500])
            cost = rng.randint(1, capacity)
            expected = gcra(tat_us, now, capacity, interval_us, cost)
            tat_us = expected.new_tat_us
            got = kv.token_bucket("walk", capacity, rate, cost, now_ms=now)
            assert got == (expected.allowed, expected.retry_after_ms)

    # --- misc -----------------------------------------------------------------------------

    def test_nonce_store(self, kv: KeyValueStore) -> None:
        nonces = NonceStore(kv)
        assert nonces("k1", "nonce-aaaaaaaaaaaaaaaa") is True
        assert nonces("k1", "nonce-aaaaaaaaaaaaaaaa") is False
        assert nonces("k2", "nonce-aaaaaaaaaaaaaaaa") is True

    def test_ping(self, kv: KeyValueStore) -> None:
        kv.ping()


class TestMemoryKeyValueStore(KeyValueContract):
    @pytest.fixture
    def kv(self) -> MemoryKeyValueStore:
        self.clock = FakeClock()
        return MemoryKeyValueStore(clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.now_s += seconds

    def test_purge_expired(self, kv: MemoryKeyValueStore) -> None:
        kv.set("a", b"1", ttl_s=5)
        kv.set("b", b"1")
        kv.token_bucket("tb", 1, 1.0, now_ms=T0_MS)
        self.advance(6)
        assert kv.purge_expired(now_ms=T0_MS + 1000) == 2
        assert kv.get("b") == b"1"


class TestPostgresKeyValueStore(KeyValueContract):
    @pytest.fixture
    def pool(self, db_url: str) -> Iterator[ConnectionPool[Any]]:
        pool = make_pool(db_url, max_size=THREADS, name="kv-test")
        yield pool
        pool.close()

    @pytest.fixture
    def kv(self, pool: ConnectionPool[Any]) -> PostgresKeyValueStore:
        return PostgresKeyValueStore(pool)

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)

    def test_purge_expired(self, kv: PostgresKeyValueStore, pool: ConnectionPool[Any]) -> None:
        kv.set("a", b"1", ttl_s=1)
        kv.set("b", b"1")
        now_ms = int(time.time() * 1000)
        kv.token_bucket("old", 1, 1.0, now_ms=now_ms - 3_600_000)  # full long ago
        kv.token_bucket("fresh", 1, 1.0, now_ms=now_ms)
        self.advance(1.1)
        assert kv.purge_expired() == 2
        with pool.connection() as conn:
            assert conn.execute("SELECT key FROM kv_entry").fetchall() == [("b",)]
            assert conn.execute("SELECT key FROM kv_token_bucket").fetchall() == [("fresh",)]

    def test_open_kv_chooses_postgres_without_upstash(self, pool: ConnectionPool[Any]) -> None:
        kv = open_kv(Settings(APP_ENV="test", UPSTASH_REDIS_REST_URL=""), pool)
        assert isinstance(kv, PostgresKeyValueStore)
        with pytest.raises(KeyValueError):
            open_kv(Settings(APP_ENV="test", UPSTASH_REDIS_REST_URL=""), None)


class TestUpstashKeyValueStore(KeyValueContract):
    @pytest.fixture
    def kv(self, upstash_server: UpstashServer) -> Iterator[UpstashKeyValueStore]:
        upstash_server.flush()
        store = UpstashKeyValueStore(upstash_server.url, upstash_server.token)
        yield store
        store.close()

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)

    def test_wrong_token_is_a_kv_error(self, upstash_server: UpstashServer) -> None:
        store = UpstashKeyValueStore(upstash_server.url, "wrong-token")
        with pytest.raises(KeyValueError, match="Unauthorized"):
            store.ping()
        with pytest.raises(KeyValueError):
            store.get("k")
        store.close()

    def test_unreachable_server_is_a_kv_error(self) -> None:
        store = UpstashKeyValueStore("http://127.0.0.1:9", "t")  # discard port: connection refused
        with pytest.raises(KeyValueError):
            store.ping()
        store.close()

    def test_values_live_under_the_namespace(
        self, kv: UpstashKeyValueStore, upstash_server: UpstashServer
    ) -> None:
        kv.set("k", b"\x00\xff")
        kv.token_bucket("k", 1, 1.0, now_ms=T0_MS)
        keys = sorted(upstash_server.redis.keys("*"))
        assert keys == [b"em:kv:k", b"em:tb:k"]
        assert upstash_server.redis.get("em:kv:k") == "\x00\xff".encode()  # latin-1 text, as UTF-8

    def test_open_kv_chooses_upstash_when_configured(self, upstash_server: UpstashServer) -> None:
        settings = Settings(
            APP_ENV="test",
            UPSTASH_REDIS_REST_URL=upstash_server.url,
            UPSTASH_REDIS_REST_TOKEN=upstash_server.token,
        )
        kv = open_kv(settings, None)
        assert isinstance(kv, UpstashKeyValueStore)
        kv.ping()
        kv.close()
        with pytest.raises(KeyValueError):
            open_kv(Settings(APP_ENV="test", UPSTASH_REDIS_REST_URL=upstash_server.url), None)
