"""One settings object, read from the environment (and `.env`), for every service.

Names match production (design.md §4). Local defaults make `scripts/up.sh` work on a
fresh machine; the default secrets they include are refused outside local/test mode so a
deployment cannot silently run with them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_PREFIX = "local-dev-insecure-"  # noqa: S105 - marks defaults so they can be refused
REPO_ROOT = Path(__file__).resolve().parent.parent


class HmacKey(BaseModel):
    """One HMAC signing key. `created_at_s` orders keys for rotation."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    secret: str = Field(min_length=16)
    created_at_s: int = 0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    app_env: Literal["local", "test", "production"] = Field("local", alias="APP_ENV")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    data_dir: Path = Field(REPO_ROOT / ".data", alias="DATA_DIR")

    # database: empty means "start the embedded server in data_dir/pg"
    database_url: str = Field("", alias="DATABASE_URL")
    db_pool_max: int = Field(10, alias="DB_POOL_MAX", ge=1, le=200)

    object_store_url: str = Field("", alias="OBJECT_STORE_URL")

    upstash_redis_rest_url: str = Field("", alias="UPSTASH_REDIS_REST_URL")
    upstash_redis_rest_token: str = Field("", alias="UPSTASH_REDIS_REST_TOKEN")

    pinecone_api_key: str = Field("", alias="PINECONE_API_KEY")
    pinecone_index: str = Field("", alias="PINECONE_INDEX")

    huggingface_api_url: str = Field("", alias="HUGGINGFACE_API_URL")
    huggingface_api_key: str = Field("", alias="HUGGINGFACE_API_KEY")
    llm_mode: Literal["degraded", "huggingface", "local"] = Field("degraded", alias="LLM_MODE")
    embedding_model: str = Field("all-MiniLM-L6-v2", alias="EMBEDDING_MODEL")
    llm_batch_size: int = Field(8, alias="LLM_BATCH_SIZE", ge=1, le=256)

    functions_host: str = Field("127.0.0.1", alias="FUNCTIONS_HOST")
    functions_port: int = Field(8100, alias="FUNCTIONS_PORT")
    orderbook_url: str = Field("http://127.0.0.1:8101", alias="ORDERBOOK_URL")
    # devstack only: run the host on the mypyc-compiled engine ("auto": when it can be built).
    orderbook_engine: Literal["auto", "mypyc", "pure"] = Field("auto", alias="ORDERBOOK_ENGINE")
    playwright_runner_url: str = Field("http://127.0.0.1:8102", alias="PLAYWRIGHT_RUNNER_URL")

    # HMAC: JSON list of {"id", "secret", "created_at_s"}; the newest key signs.
    hmac_keys_json: str = Field(
        json.dumps([{"id": "local-1", "secret": DEFAULT_SECRET_PREFIX + "hmac-0123456789"}]),
        alias="HMAC_KEYS",
    )
    audit_hmac_key: str = Field(DEFAULT_SECRET_PREFIX + "audit-0123456789", alias="AUDIT_HMAC_KEY")

    jwt_secret: str = Field(DEFAULT_SECRET_PREFIX + "jwt-0123456789abcdef", alias="JWT_SECRET")
    jwt_algorithm: Literal["HS256", "RS256"] = Field("HS256", alias="JWT_ALGORITHM")
    jwt_jwks_url: str = Field("", alias="JWT_JWKS_URL")
    jwt_issuer: str = Field("everything-market", alias="JWT_ISSUER")
    jwt_audience: str = Field("everything-market", alias="JWT_AUDIENCE")
    jwt_ttl_s: int = Field(3600, alias="JWT_TTL_S", ge=60, le=86400 * 30)

    max_body_bytes: int = Field(10 * 1024 * 1024, alias="MAX_BODY_BYTES", ge=1024)

    # token buckets on order entry (functions/rate_limit.py): burst size and refill rate
    rate_limit_order_account_burst: int = Field(20, alias="RATE_LIMIT_ORDER_ACCOUNT_BURST", ge=1)
    rate_limit_order_account_per_s: float = Field(10.0, alias="RATE_LIMIT_ORDER_ACCOUNT_PER_S", gt=0)
    rate_limit_order_ip_burst: int = Field(60, alias="RATE_LIMIT_ORDER_IP_BURST", ge=1)
    rate_limit_order_ip_per_s: float = Field(30.0, alias="RATE_LIMIT_ORDER_IP_PER_S", gt=0)

    # orderbook host
    orderbook_shard_id: str = Field("orderbook-host-1", alias="ORDERBOOK_SHARD_ID")
    orderbook_symbols: str = Field("*", alias="ORDERBOOK_SYMBOLS")  # comma list, or * for all
    wal_dir: Path | None = Field(None, alias="WAL_DIR")
    fsync_policy: Literal["always", "every_n", "interval_ms"] = Field("always", alias="FSYNC_POLICY")
    fsync_every_n: int = Field(64, alias="FSYNC_EVERY_N", ge=1)
    fsync_interval_ms: int = Field(5, alias="FSYNC_INTERVAL_MS", ge=1)
    snapshot_interval_s: float = Field(10.0, alias="SNAPSHOT_INTERVAL_S", gt=0)
    # ... or sooner, once this many WAL records came after the last one (bounds recovery time).
    snapshot_every_records: int = Field(100_000, alias="SNAPSHOT_EVERY_RECORDS", ge=1)
    # Encode snapshots in a forked child (copy-on-write) so order entry does not stall on them.
    snapshot_in_child: bool = Field(True, alias="SNAPSHOT_IN_CHILD")
    # WAL segments roll at this size; retention deletes whole segments behind the snapshots.
    wal_segment_bytes: int = Field(64 * 1024 * 1024, alias="WAL_SEGMENT_BYTES", ge=4096)
    replay_buffer_size: int = Field(10_000, alias="REPLAY_BUFFER_SIZE", ge=1)
    # Keep the whole WAL (read models rebuild from seq 1) unless pruning is asked for.
    wal_prune: bool = Field(False, alias="WAL_PRUNE")
    journal_size: int = Field(20_000, alias="JOURNAL_SIZE", ge=1)

    # playwright runner
    chromium_path: str = Field("/usr/bin/chromium", alias="CHROMIUM_PATH")
    runner_contexts: int = Field(2, alias="RUNNER_CONTEXTS", ge=1, le=32)

    @field_validator("hmac_keys_json")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        keys = [HmacKey.model_validate(k) for k in json.loads(value)]
        if not keys:
            raise ValueError("HMAC_KEYS needs at least one key")
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.app_env in ("local", "test"):
            return self
        defaults = [
            name
            for name, value in (
                ("JWT_SECRET", self.jwt_secret),
                ("AUDIT_HMAC_KEY", self.audit_hmac_key),
            )
            if value.startswith(DEFAULT_SECRET_PREFIX)
        ]
        if any(k.secret.startswith(DEFAULT_SECRET_PREFIX) for k in self.hmac_keys):
            defaults.append("HMAC_KEYS")
        if defaults:
            raise ValueError(f"default secrets refused outside local mode: {', '.join(defaults)}")
        if not self.database_url:
            raise ValueError("DATABASE_URL is required outside local mode")
        return self

    @property
    def hmac_keys(self) -> list[HmacKey]:
        return [HmacKey.model_validate(k) for k in json.loads(self.hmac_keys_json)]

    @property
    def object_store(self) -> str:
        return self.object_store_url or f"file://{self.data_dir / 'objects'}"

    @property
    def embedded_pg_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def orderbook_wal_dir(self) -> Path:
        return self.wal_dir or self.data_dir / "wal" / self.orderbook_shard_id

    def serves_symbol(self, symbol: str) -> bool:
        if self.orderbook_symbols.strip() == "*":
            return True
        return symbol in {s.strip() for s in self.orderbook_symbols.split(",") if s.strip()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests build `Settings(...)` directly instead."""
    return Settings()
