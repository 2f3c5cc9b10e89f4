"""Run a benchmark on the mypyc-compiled engine: build a copy once, then re-run the same
command in a child process whose import path puts that copy first (so every process the
benchmark starts — memory children, `python -m orderbook_host` — imports it too).

    .venv/bin/python -m bench.host_recovery --mypyc /tmp/engine-build ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench import _engine_build
from orderbook_host import build_info


def engine_build() -> str:
    """Which engine this process imports: "mypyc (path)" or "pure Python"."""
    build = build_info.engine_build()
    return f"{build} ({build_info.ENGINE_FILE})" if build == "mypyc" else build


def add_mypyc_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mypyc",
        type=Path,
        default=None,
        metavar="DIR",
        help="run on the mypyc-built engine (built into DIR)",
    )


def rerun_if_asked(args: argparse.Namespace, module: str) -> None:
    """With `--mypyc DIR`: run this bench again on that build and exit with its code."""
    if args.mypyc is not None:
        raise SystemExit(rerun_compiled(args.mypyc.resolve(), module, strip_mypyc(sys.argv[1:])))


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
