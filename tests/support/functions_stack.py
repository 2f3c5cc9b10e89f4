"""The functions app wired to real PostgreSQL and a real orderbook host process.

from tests.support.functions_stack import stack  # noqa: F401  (the fixture is named by the attribute)

def test_something(stack: FunctionsStack) -> None:
    stack.client.post("/api/v1/...")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emlib.settings import Settings
from tests.support.host_process import TEST_HMAC_KEY, HostProcess


@dataclass
class FunctionsStack:
    settings: Settings
    host: HostProcess
    client: TestClient


def make_settings(db_url: str, data_dir: Path, host: HostProcess, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "APP_ENV": "test",
        "DATABASE_URL": db_url,
        "DATA_DIR": str(data_dir),
        "ORDERBOOK_URL": host.url,
        "HMAC_KEYS": f'[{{"id": "{TEST_HMAC_KEY.id}", "secret": "{TEST_HMAC_KEY.secret}"}}]',
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def stack(db_url: str, tmp_path: Path) -> Iterator[FunctionsStack]:
    from functions.app import create_app

    host = HostProcess(tmp_path / "host")
    host.start()
    try:
        settings = make_settings(db_url, tmp_path / "functions", host)
        app = create_app(settings)
        with TestClient(app) as client:
            yield FunctionsStack(settings, host, client)
        app.state.orderbook.close()
        app.state.resources.close()
    finally:
        host.stop()
