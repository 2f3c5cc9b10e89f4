"""functions.rate_limit: buckets per subject, 429 + Retry-After, dependencies on a tiny app."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, Header
from fastapi.testclient import TestClient

from emlib.kv.base import KeyValueError
from emlib.kv.memory import MemoryKeyValueStore
from emlib.problems import ProblemError, install_problem_handlers
from functions.rate_limit import (
    DEFAULT_SPECS,
    BucketSpec,
    RateLimiter,
    limit_by,
    limit_by_ip,
    specs_from_settings,
)


def header_user(x_user: Annotated[str, Header()]) -> str:
    return x_user


Caller = Annotated[str, Depends(limit_by("user", header_user, key=lambda u: u))]


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


def make_limiter(clock: Clock, capacity: int = 3, refill_per_s: float = 2.0) -> RateLimiter:
    return RateLimiter(MemoryKeyValueStore(), {"b": BucketSpec(capacity, refill_per_s)}, clock)


def test_burst_then_refused_with_retry_after_rounded_up() -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    for _ in range(3):
        limiter.hit("b", "alice")
    with pytest.raises(ProblemError) as info:
        limiter.hit("b", "alice")
    err = info.value
    assert (err.status, err.code) == (429, "rate_limited")
    # 2 tokens/s: the next token is 500 ms away → Retry-After 1 (ceil, never 0)
    assert err.extra["retry_after_ms"] == 500
    assert err.headers == {"Retry-After": "1"}


def test_subjects_have_separate_buckets_and_refill_over_time() -> None:
    clock = Clock()
    limiter = make_limiter(clock, capacity=1, refill_per_s=0.25)
    limiter.hit("b", "alice")
    limiter.hit("b", "bob")
    with pytest.raises(ProblemError) as info:
        limiter.hit("b", "alice")
    assert info.value.headers["Retry-After"] == "4"
    clock.now_ms += 4000
    limiter.hit("b", "alice")


def test_store_failure_lets_requests_through() -> None:
    class BrokenStore(MemoryKeyValueStore):
        def token_bucket(
            self, key: str, capacity: int, refill_per_s: float, cost: int = 1, *, now_ms: int
        ) -> tuple[bool, int]:
            raise KeyValueError("down")

    limiter = RateLimiter(BrokenStore(), {"b": BucketSpec(1, 1.0)}, Clock())
    for _ in range(5):
        limiter.hit("b", "alice")


def test_specs_from_settings_overrides_only_what_is_set() -> None:
    settings = SimpleNamespace(rate_limit_order_account_burst=5, rate_limit_order_account_per_s=0.5)
    specs = specs_from_settings(settings)
    assert specs["order:account"] == BucketSpec(5, 0.5)
    assert specs["order:ip"] == DEFAULT_SPECS["order:ip"]


def test_dependencies_on_an_app() -> None:
    clock = Clock()
    app = FastAPI()
    install_problem_handlers(app, max_body_bytes=1024)
    app.state.rate_limiter = RateLimiter(
        MemoryKeyValueStore(), {"ip": BucketSpec(3, 1.0), "user": BucketSpec(1, 1.0)}, clock
    )

    @app.get("/thing", dependencies=[Depends(limit_by_ip("ip"))])
    def thing(user: Caller) -> dict[str, str]:
        return {"user": user}

    client = TestClient(app)
    assert client.get("/thing", headers={"X-User": "a"}).json() == {"user": "a"}
    refused = client.get("/thing", headers={"X-User": "a"})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["bucket"] == "user"
    assert client.get("/thing", headers={"X-User": "b"}).status_code == 200
    # the IP bucket (3) is now spent whoever the user is
    refused = client.get("/thing", headers={"X-User": "c"})
    assert (refused.status_code, refused.json()["bucket"]) == (429, "ip")
