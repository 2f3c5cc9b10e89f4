"""devstack's choice of matching engine for the host (no build here: that needs gcc and ~15 s)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from devstack.engine_build import REPO, EngineBuildError, EngineChoice, prepare, sources_key


def test_pure_asked_runs_the_checkout_unchanged(tmp_path: Path) -> None:
    choice = prepare(tmp_path, "pure")
    assert choice.build == "pure Python" and choice.path is None
    assert choice.host_argv() == [sys.executable, "-m", "orderbook_host"]
    assert choice.host_env(dict(os.environ)) == {}
    assert not any(tmp_path.iterdir())


def test_no_compiler_falls_back_to_pure_python_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    choice = prepare(tmp_path / "cache", "auto")
    assert choice.build == "pure Python" and choice.path is None
    assert "no C compiler" in choice.note


def test_no_compiler_is_an_error_when_mypyc_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EngineBuildError, match="no C compiler"):
        prepare(tmp_path / "cache", "mypyc")


def test_a_build_goes_first_on_the_host_path_and_the_working_directory_does_not() -> None:
    build = Path("/cache/abc")
    choice = EngineChoice("mypyc", "cached", build)
    assert choice.host_argv() == [sys.executable, "-P", "-m", "orderbook_host"]
    env = choice.host_env({"PYTHONPATH": "/x"})
    assert env == {"PYTHONPATH": os.pathsep.join([str(build), str(REPO), "/x"])}


def test_cache_key_is_stable_for_the_same_sources() -> None:
    assert sources_key() == sources_key() and len(sources_key()) == 16
