"""The key-value port on Upstash Redis, spoken over its REST API (`upstash-redis`).

Values are bytes but the REST client carries text: a value travels as its latin-1
decoding (one character per byte), so any bytes round-trip, and ASCII values, such as
the decimal counters INCRBY writes, are stored byte for byte. Multi-step operations are
Lua scripts run with EVAL, which Redis executes atomically: `incr` (INCRBY plus an
expiry only for a new counter) and the GCRA token-bucket step (a copy of
`emlib.kv.base.gcra`). Keys live under a namespace (`em:` by default): `kv:` for
values, `tb:` for buckets, so a bucket never collides with a value of the same name.

Every client or server failure is raised as `KeyValueError`. Requests are not retried:
a retried INCR or SET NX whose first attempt succeeded would count twice or refuse a
fresh nonce.
"""

from __future__ import annotations

from typing import Any

import httpx

from emlib.kv.base import (
    KeyValueError,
    KeyValueStore,
    check_bucket,
    check_key,
    check_ttl,
    emission_interval_us,
)

REQUEST_TIMEOUT_S = 5.0

_INCR_LUA = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# base.gcra, line by line. Lua numbers are doubles: exact for microsecond epochs < 2^53.
_BUCKET_LUA = """
local now_us = tonumber(ARGV[1])
local cost_us = tonumber(ARGV[2])
local burst_us = tonumber(ARGV[3])
local tat_us = tonumber(redis.call('GET', KEYS[1]) or '0')
local base_us = math.max(tat_us, now_us)
local new_tat_us = base_us + cost_us
local allow_at_us = new_tat_us - burst_us
if allow_at_us <= now_us then
  local ttl_ms = math.ceil((new_tat_us - now_us) / 1000)
  redis.call('SET', KEYS[1], string.format('%d', new_tat_us), 'PX', string.format('%d', ttl_ms))
  return {1, 0}
end
return {0, math.ceil((allow_at_us - now_us) / 1000)}
"""


class UpstashKeyValueStore(KeyValueStore):
    def __init__(self, url: str, token: str, namespace: str = "em:", client: Any = None) -> None:
        if client is None:
            from upstash_redis import Redis

            client = Redis(url=url, token=token, rest_retries=0, allow_telemetry=False)
            # The package's httpx client has no timeout; a hung connection must not hang a request.
            client._http._client.close()
            client._http._client = httpx.Client(timeout=REQUEST_TIMEOUT_S)
        self.redis = client
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self.namespace}kv:{check_key(key)}"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.redis, method)(*args, **kwargs)
        except Exception as exc:  # UpstashError, httpx errors, a bad JSON reply
            raise KeyValueError(f"upstash {method}: {type(exc).__name__}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        value = self._call("get", self._key(key))
        if value is None:
            return None
        try:
            return str(value).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise KeyValueError(f"value at {key!r} was not written by this adapter") from exc

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        self._call("set", self._key(key), bytes(value).decode("latin-1"), ex=check_ttl(ttl_s))

    def set_if_absent(self, key: str, value: bytes, ttl_s: int | None) -> bool:
        stored = self._call(
            "set", self._key(key), bytes(value).decode("latin-1"), nx=True, ex=check_ttl(ttl_s)
        )
        return bool(stored)

    def delete(self, key: str) -> None:
        self._call("delete", self._key(key))

    def incr(self, key: str, amount: int = 1, ttl_s: int | None = None) -> int:
        ttl = check_ttl(ttl_s)
        result = self._call(
            "eval", _INCR_LUA, keys=[self._key(key)], args=[str(amount), "" if ttl is None else str(ttl)]
        )
        return int(result)

    def token_bucket(
        self, key: str, capacity: int, refill_per_s: float, cost: int = 1, *, now_ms: int
    ) -> tuple[bool, int]:
        check_bucket(capacity, cost)
        interval_us = emission_interval_us(refill_per_s)
        result = self._call(
            "eval",
            _BUCKET_LUA,
            keys=[f"{self.namespace}tb:{check_key(key)}"],
            args=[str(now_ms * 1000), str(cost * interval_us), str(capacity * interval_us)],
        )
        allowed, retry_after_ms = int(result[0]), int(result[1])
        return allowed == 1, retry_after_ms

    def ping(self) -> None:
        self._call("ping")

    def close(self) -> None:
        self._call("close")
