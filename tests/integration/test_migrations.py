from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from emlib.db.migrate import MigrationError, discover, migrate


def test_applies_all_then_nothing(empty_db_url: str) -> None:
    first = migrate(empty_db_url)
    assert first == [m.version for m in discover()]
    assert migrate(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == first


def test_two_processes_at_once_apply_each_once(empty_db_url: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in discover()]


def test_edited_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    migrate(empty_db_url, tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
    with pytest.raises(MigrationError):
        migrate(empty_db_url, tmp_path)


def test_bad_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_a.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        discover(tmp_path)
