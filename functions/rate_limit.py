"""Rate limits for the public API: token buckets in the key-value port, as FastAPI dependencies.

Why here and not in the host: the orderbook host is one process per shard and must spend its
time matching; abusive clients are turned away by the stateless functions layer, and the
bucket state lives in the key-value port (Upstash Redis in production, the PostgreSQL `kv`
table locally) so every Lambda instance shares it.

A *bucket* is a named spec (`capacity` tokens, refilled at `refill_per_s`) applied per
*subject* (an account id, a client IP); the stored key is `rl:{bucket}:{subject}`. A refused
request answers 429 `rate_limited` with `Retry-After` in whole seconds (rounded up, at least
1) and `retry_after_ms` in the body.

    limit_by_ip("order:ip")                       # a route dependency, before auth
    limit_by("order:account", trader, key=lambda p: p.user_id)   # wraps another dependency

Specs come from `app.state.rate_limiter` when a test or an app installed one, else from the
defaults below overridden by settings attributes `rate_limit_<bucket with : → _>_burst` and
`..._per_s` when the settings class has them (e.g. `rate_limit_order_account_burst`).

If the key-value backend fails, requests are let through (and logged): a rate limiter that
takes trading down with it is worse than a few minutes without one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, Request

from emlib.kv import KeyValueStore
from emlib.kv.base import KeyValueError
from emlib.problems import ProblemError

_log = logging.getLogger("functions.rate_limit")

T = TypeVar("T")


@dataclass(frozen=True)
class BucketSpec:
    capacity: int
    refill_per_s: float


# Defaults: a person or agent placing orders by hand or in small bursts is never refused; a
# runaway loop is held to 10 orders/s per account and 30 requests/s per IP.
DEFAULT_SPECS: Mapping[str, BucketSpec] = {
    "order:account": BucketSpec(capacity=20, refill_per_s=10.0),
    "order:ip": BucketSpec(capacity=60, refill_per_s=30.0),
}


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class RateLimiter:
    def __init__(
        self,
        kv: KeyValueStore,
        specs: Mapping[str, BucketSpec],
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self.kv = kv
        self.specs = dict(specs)
        self.clock_ms = clock_ms

    def hit(self, bucket: str, subject: str, cost: int = 1) -> None:
        """Take `cost` tokens for `subject` from `bucket`, or raise 429 `rate_limited`."""
        spec = self.specs[bucket]
        try:
            allowed, retry_after_ms = self.kv.token_bucket(
                f"rl:{bucket}:{subject}", spec.capacity, spec.refill_per_s, cost, now_ms=self.clock_ms()
            )
        except KeyValueError:
            _log.warning("rate limit store failed; letting %s %s through", bucket, subject, exc_info=True)
            return
        if not allowed:
            retry_after_s = max(1, math.ceil(retry_after_ms / 1000))
            raise ProblemError(
                429,
                "rate_limited",
                f"too many requests ({bucket}); retry in {retry_after_s} s",
                headers={"Retry-After": str(retry_after_s)},
                extra={"retry_after_ms": retry_after_ms, "bucket": bucket},
            )


def specs_from_settings(settings: Any) -> dict[str, BucketSpec]:
    """The defaults, each overridden by `rate_limit_<bucket>_burst` / `_per_s` settings if present."""
    specs = {}
    for bucket, spec in DEFAULT_SPECS.items():
        name = "rate_limit_" + bucket.replace(":", "_")
        specs[bucket] = BucketSpec(
            capacity=int(getattr(settings, name + "_burst", spec.capacity)),
            refill_per_s=float(getattr(settings, name + "_per_s", spec.refill_per_s)),
        )
    return specs


def get_rate_limiter(request: Request) -> RateLimiter:
    """The app's limiter, built once from its resources and settings."""
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "rate_limiter", None)
    if limiter is None:
        limiter = RateLimiter(state.resources.kv, specs_from_settings(state.resources.settings))
        state.rate_limiter = limiter
    return limiter


def client_ip(request: Request) -> str:
    """The caller's address as the ASGI server saw it.

    Behind API Gateway, Mangum puts `requestContext.http.sourceIp` there; locally uvicorn puts
    the socket peer (run it with `--proxy-headers` only behind a trusted proxy, or anyone could
    pick their own bucket with X-Forwarded-For).
    """
    return request.client.host if request.client else "unknown"


def limit_by_ip(bucket: str) -> Callable[[Request], None]:
    """A dependency charging `bucket` per client IP (use in `dependencies=[Depends(...)]`)."""

    def dependency(request: Request) -> None:
        get_rate_limiter(request).hit(bucket, client_ip(request))

    return dependency


def limit_by(bucket: str, subject_dep: Callable[..., T], key: Callable[[T], str]) -> Callable[..., T]:
    """A dependency that resolves `subject_dep` (e.g. the caller), charges `bucket` for
    `key(subject)` and returns the subject, so routes keep a single parameter for it."""

    def dependency(request: Request, subject: Any = Depends(subject_dep)) -> T:
        get_rate_limiter(request).hit(bucket, key(subject))
        result: T = subject
        return result

    return dependency
