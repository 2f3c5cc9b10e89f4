"""Run a benchmark on the mypyc-compiled engine: build a copy once, then re-run the same
command in a child process whose import path puts that copy first (so every process the
benchmark starts — memory children, `python -m orderbook_host` — imports it too).

    .venv/bin/python -m bench.host_recovery --mypyc /tmp/engine-build ...
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import _engine_build


def engine_build() -> str:
    """Which engine this process imports: "mypyc (path)" or "pure Python"."""
    import orderbook_host.engine.exchange as module

    path = str(module.__file__)
    return f"mypyc ({path})" if path.endswith(".so") else "pure Python"


def rerun_compiled(where: Path, module: str, argv: list[str]) -> int:
    """Run `python -m module argv` (argv without --mypyc) on a current build in `where`
    (built first if missing or stale); its exit code."""
    error = _engine_build.ensure_build(where)
    if error is not None:
        print(f"mypyc build into {where} failed: {error}", file=sys.stderr)
        return 1
    return subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=where, env=_engine_build.build_env(where)
    ).returncode


def strip_mypyc(argv: list[str]) -> list[str]:
    """argv without `--mypyc DIR` / `--mypyc=DIR`."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--mypyc":
            skip = True
            continue
        if arg.startswith("--mypyc="):
            continue
        out.append(arg)
    return out
