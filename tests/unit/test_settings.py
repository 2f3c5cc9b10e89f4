from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from emlib.settings import Settings

STRONG = {
    "JWT_SECRET": "j" * 40,
    "AUDIT_HMAC_KEY": "a" * 40,
    "HMAC_KEYS": json.dumps([{"id": "prod-1", "secret": "s" * 40, "created_at_s": 1}]),
    "DATABASE_URL": "postgresql://db.example/market",
}


def test_local_defaults_run_everything_on_one_machine() -> None:
    settings = Settings(APP_ENV="local", DATA_DIR="/tmp/x")
    assert settings.object_store == "file:///tmp/x/objects"
    assert settings.database_url == ""
    assert settings.fsync_policy == "always"
    assert settings.serves_symbol("ANY")


@pytest.mark.parametrize("weak", ["JWT_SECRET", "AUDIT_HMAC_KEY", "HMAC_KEYS"])
def test_default_secrets_are_refused_in_production(weak: str) -> None:
    values = dict(STRONG)
    del values[weak]
    with pytest.raises(ValidationError, match=weak):
        Settings.model_validate({"APP_ENV": "production", **values})


def test_production_with_real_secrets_is_accepted() -> None:
    settings = Settings.model_validate({"APP_ENV": "production", **STRONG})
    assert settings.hmac_keys[0].id == "prod-1"


def test_production_needs_a_database_url() -> None:
    values = {k: v for k, v in STRONG.items() if k != "DATABASE_URL"}
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings.model_validate({"APP_ENV": "production", **values})


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJECT_STORE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("ORDERBOOK_SYMBOLS", "A, B")
    monkeypatch.setenv("LLM_BATCH_SIZE", "16")
    settings = Settings()
    assert settings.object_store == "s3://bucket/prefix"
    assert settings.serves_symbol("A") and settings.serves_symbol("B") and not settings.serves_symbol("C")
    assert settings.llm_batch_size == 16


@pytest.mark.parametrize(
    "keys",
    [
        "[]",
        "not json",
        json.dumps([{"id": "k", "secret": "short"}]),
        json.dumps([{"id": "bad id!", "secret": "s" * 20}]),
    ],
)
def test_bad_hmac_keys_are_refused(keys: str) -> None:
    with pytest.raises((ValidationError, ValueError)):
        Settings(HMAC_KEYS=keys)


def test_bad_enum_setting_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(FSYNC_POLICY="sometimes")
