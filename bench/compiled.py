"""Run a benchmark on the mypyc-compiled engine: build a copy once, then re-run the same
command in a child process whose import path puts that copy first (so every process the
benchmark starts — memory children, `python -m orderbook_host` — imports it too).

    .venv/bin/python -m bench.host_recovery --mypyc /tmp/engine-build ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def engine_build() -> str:
    """Which engine this process imports: "mypyc (path)" or "pure Python"."""
    import orderbook_host.engine.exchange as module

    path = str(module.__file__)
    return f"mypyc ({path})" if path.endswith(".so") else "pure Python"


def ensure_build(where: Path) -> None:
    """`scripts/build_engine.py --into where`, unless a build is there already."""
    if list((where / "orderbook_host" / "engine").glob("exchange.*.so")):
        return
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_engine.py"), "--into", str(where)],
        check=True,
        capture_output=True,
    )
    print(f"mypyc build of the engine into {where}: {time.perf_counter() - started:.1f} s", flush=True)


def rerun_compiled(where: Path, module: str, argv: list[str]) -> int:
    """Run `python -m module argv` (argv without --mypyc) on the build in `where`; its exit code."""
    ensure_build(where)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(REPO)])}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=where, env=env).returncode


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
