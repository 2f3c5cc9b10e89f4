"""A mypyc-compiled copy of the engine for benches that time or weigh both builds.

``scripts/build_engine.py --into DIR`` copies the engine sources to DIR and compiles them there,
so the checkout stays pure Python. A DIR already holding a build is reused only while its copied
sources still equal the checkout's: an older build would silently measure old code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE = Path("orderbook_host") / "engine"


def is_current(where: Path) -> bool:
    """True if ``where`` holds a compiled engine built from the checkout's current sources."""
    if not list((where / ENGINE).glob("exchange.*.so")):
        return False
    ours = {p.name: p.read_bytes() for p in (REPO / ENGINE).glob("*.py")}
    theirs = {p.name: p.read_bytes() for p in (where / ENGINE).glob("*.py")}
    return ours == theirs


def ensure_build(where: Path) -> str | None:
    """Build the engine into ``where`` unless a current build is there; an error note or None."""
    if is_current(where):
        return None
    t0 = time.perf_counter()
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_engine.py"), "--into", str(where)],
        capture_output=True,
        text=True,
    )
    if built.returncode:
        return f"build failed: {built.stderr.strip().splitlines()[-1:]}"
    print(f"mypyc build of the engine into {where}: {time.perf_counter() - t0:.1f} s", flush=True)
    return None


def build_env(where: Path) -> dict[str, str]:
    """Environment for a subprocess (run with ``cwd=where``) that imports the build in ``where``
    first and everything else from the checkout."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(REPO)])}
