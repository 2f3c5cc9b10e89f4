"""Which matching engine the local stack's orderbook host runs: compiled with mypyc when it can be.

Problem: the mypyc-compiled engine is ~3x faster than the pure-Python one (docs/benchmarks.md),
but building it inside the checkout would shadow the sources (and a ``.so`` must never be
committed), and the tests run the pure engine. So the stack builds a copy of the engine
(``scripts/build_engine.py --into``) into a cache directory named after a hash of the engine
sources and the interpreter, reuses it while that hash holds, and puts it first on the import
path of the host process only. The copy's ``orderbook_host/__init__.py`` extends the package
path to the checkout, so only ``orderbook_host.engine`` comes from the build; the host runs
with ``python -P`` so its working directory does not go in front of that path.

``ORDERBOOK_ENGINE``: ``auto`` (default) builds when gcc, the Python headers and mypyc are
there and falls back to pure Python with a logged reason otherwise; ``mypyc`` makes a failed
build an error; ``pure`` skips the build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE = Path("orderbook_host") / "engine"
BUILD_SCRIPT = REPO / "scripts" / "build_engine.py"
PACKAGE_INIT = '''"""Orderbook host, with the engine from this mypyc build (devstack/engine_build.py).

The rest of the package comes from the checkout: ``extend_path`` appends every other
``orderbook_host`` directory on ``sys.path`` after this one.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
'''


class EngineBuildError(RuntimeError):
    """ORDERBOOK_ENGINE=mypyc, and the compiled engine could not be built."""


@dataclass(frozen=True)
class EngineChoice:
    build: str  # "mypyc" or "pure Python"
    note: str  # why, or where the build is
    path: Path | None = None  # directory to put first on the host's PYTHONPATH

    def host_argv(self) -> list[str]:
        # -P: no working directory at the front of sys.path, so PYTHONPATH's build wins.
        return [sys.executable, *(["-P"] if self.path else []), "-m", "orderbook_host"]

    def host_env(self, env: dict[str, str]) -> dict[str, str]:
        """Variables the host process needs on top of ``env`` (the stack's environment)."""
        if self.path is None:
            return {}
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        return {"PYTHONPATH": os.pathsep.join([str(self.path), str(REPO), *rest])}


def sources_key() -> str:
    """Hash of what the build depends on: engine sources, build script, interpreter, mypyc."""
    from importlib.metadata import version

    h = hashlib.sha256()
    for part in (sys.version, str(sysconfig.get_config_var("SOABI")), version("mypy")):
        h.update(part.encode() + b"\0")
    for path in [
        *sorted((REPO / ENGINE).glob("*.py")),
        REPO / "orderbook_host" / "__init__.py",
        BUILD_SCRIPT,
    ]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def missing_toolchain() -> str | None:
    """Why the engine cannot be compiled here, or None."""
    cc = str(sysconfig.get_config_var("CC") or "gcc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}) on PATH"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h)"
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed"
    return None


def is_built(path: Path) -> bool:
    return any((path / ENGINE).glob("exchange.*.so"))


def prepare(cache_dir: Path, mode: str) -> EngineChoice:
    """Build (or find in ``cache_dir``) the compiled engine; say which engine the host will run."""
    if mode == "pure":
        return EngineChoice("pure Python", "ORDERBOOK_ENGINE=pure")
    reason = missing_toolchain()
    if reason is None:
        target = cache_dir / sources_key()
        if is_built(target):
            return EngineChoice("mypyc", f"cached build in {target}", target)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Build beside the target and rename: a half-built directory is never used.
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
        t0 = time.perf_counter()
        built = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT), "--into", str(tmp)], capture_output=True, text=True
        )
        if built.returncode == 0 and is_built(tmp):
            (tmp / "orderbook_host" / "__init__.py").write_text(PACKAGE_INIT)
            for old in cache_dir.iterdir():  # builds of older sources
                if old.is_dir() and old != tmp:
                    shutil.rmtree(old, ignore_errors=True)
            tmp.rename(target)
            return EngineChoice("mypyc", f"built in {time.perf_counter() - t0:.0f} s into {target}", target)
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (built.stderr or built.stdout).strip().splitlines()[-1:]
        reason = f"mypyc build failed: {tail[0] if tail else built.returncode}"
    if mode == "mypyc":
        raise EngineBuildError(reason)
    return EngineChoice("pure Python", f"fallback: {reason}")
