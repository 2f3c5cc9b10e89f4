"""Compile the matching engine with mypyc, in place, or remove the compiled modules again.

Problem: the pure-Python engine runs ~160k commands/s on one core (bench.matching); mypyc turns
the same type-annotated modules into C extensions (~3x faster) without a second source of truth. The
``.py`` files stay authoritative and the engine works without this step: Python imports a
``<module>.cpython-*.so`` next to ``<module>.py`` in preference to it, so a build shadows the
sources until ``--clean`` removes it (rebuild after editing the engine, or the old build runs).

    .venv/bin/python scripts/build_engine.py           # build (needs gcc + Python headers)
    .venv/bin/python scripts/build_engine.py --clean   # back to pure Python
    .venv/bin/python scripts/build_engine.py --check   # say which one imports; flag stale builds
    .venv/bin/python scripts/build_engine.py --into DIR  # build a copy in DIR, tree untouched
    .venv/bin/python scripts/build_engine.py --into DIR --test  # engine tests on that copy (built if missing)

Generated C and object files go to a temporary directory; only the ``.so`` files land in
``orderbook_host/engine/`` (``*.so`` is meant to be git-ignored; never commit them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE = Path("orderbook_host") / "engine"
# Every engine module but the package ``__init__`` (it only re-exports). ``group_name`` keeps
# mypyc's shared runtime library inside the package instead of the repository root.
MODULES = ["book", "codes", "commands", "events", "exchange", "results"]
GROUP_NAME = "orderbook_host.engine.native"
ENGINE_TESTS = ["tests/unit/test_engine_*.py", "tests/property/test_engine_properties.py"]
# A pytest plugin written next to a copy under test: it refuses to run unless the engine that
# imports is that copy's compiled build (a silent fall-back to the checkout would prove nothing).
PROBE = """\
import orderbook_host.engine.exchange as m


def pytest_configure(config):
    if not m.__file__.startswith({root!r}) or not m.__file__.endswith(".so"):
        raise RuntimeError(f"engine under test is {{m.__file__}}, not the build in {root}")


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"engine under test: {{m.__file__}}")
"""


def compiled_files(root: Path) -> list[Path]:
    return sorted((root / ENGINE).glob("*.so"))


def clean(root: Path) -> None:
    for path in compiled_files(root):
        path.unlink()
        print(f"removed {path.relative_to(root)}")


def copy_sources(into: Path) -> None:
    """Copy the engine's sources (only) to ``into`` so a build there leaves the checkout alone."""
    (into / ENGINE).mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "orderbook_host" / "__init__.py", into / "orderbook_host" / "__init__.py")
    shutil.copy2(REPO / "pyproject.toml", into / "pyproject.toml")  # mypy settings
    for src in (REPO / ENGINE).glob("*.py"):
        shutil.copy2(src, into / ENGINE / src.name)


def build(root: Path, opt_level: str) -> None:
    """Compile the engine modules under ``root`` (the checkout or a copy) next to their sources."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    os.chdir(root)  # module names come from paths relative to the working directory
    clean(root)
    with tempfile.TemporaryDirectory(prefix="mypyc-engine-") as tmp:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # setuptools' beta notice about pyproject tables
            ext_modules = mypycify(
                [str(ENGINE / f"{name}.py") for name in MODULES],
                opt_level=opt_level,
                target_dir=str(Path(tmp) / "c"),
                group_name=GROUP_NAME,
            )
            setup(
                name="orderbook-engine-native",
                ext_modules=ext_modules,
                script_args=["-q", "build_ext", "--inplace", "--build-temp", str(Path(tmp) / "obj")],
            )
        secs = time.perf_counter() - t0
    total = 0
    for path in compiled_files(root):
        size = path.stat().st_size
        total += size
        print(f"{size / 1024:>9,.0f} KiB  {path.relative_to(root)}")
    print(f"{total / 1024:>9,.0f} KiB  total; built in {secs:.1f} s (opt level {opt_level})")


def check(root: Path) -> None:
    code = "import orderbook_host.engine.exchange as m; print(m.__file__)"
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    where = out.stdout.strip()
    print(("compiled: " if where.endswith(".so") else "pure Python: ") + where)
    # Python does not compare times: a build older than its source still shadows it.
    for name in MODULES:
        source = root / ENGINE / f"{name}.py"
        for so in (root / ENGINE).glob(f"{name}.*.so"):
            if source.stat().st_mtime > so.stat().st_mtime:
                print(f"STALE: {so.relative_to(root)} is older than {source.name}; rebuild or --clean")


def run_tests(root: Path) -> int:
    """The engine's tests against the compiled copy under ``root`` (not the checkout).

    ``--import-mode=append`` puts the checkout after ``PYTHONPATH`` on ``sys.path``, so the
    copy's ``orderbook_host.engine`` wins while the tests themselves come from the checkout.
    """
    (root / "engine_build_probe.py").write_text(PROBE.format(root=str(root)))
    tests = [str(p) for pattern in ENGINE_TESTS for p in sorted(REPO.glob(pattern))]
    cmd = [sys.executable, "-m", "pytest", "-q", "--import-mode=append", "-p", "no:cacheprovider"]
    cmd += ["-p", "engine_build_probe", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), *tests]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(cmd, cwd=root, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--clean", action="store_true", help="remove the compiled modules")
    group.add_argument("--check", action="store_true", help="print which engine modules import")
    group.add_argument("--test", action="store_true", help="run the engine tests against the --into build")
    parser.add_argument(
        "--into",
        type=Path,
        help="work on a copy of the engine in this directory (a build copies the sources)",
    )
    parser.add_argument("--opt-level", default="3", choices=["0", "1", "2", "3"])
    args = parser.parse_args(argv)
    root = REPO if args.into is None else args.into.resolve()
    if args.clean:
        clean(root)
    elif args.check:
        check(root)
    elif args.test:
        if root == REPO:
            parser.error("--test needs --into DIR (in the checkout, plain pytest runs what is built)")
        if not compiled_files(root):  # nothing built there yet: build first, then test
            copy_sources(root)
            build(root, args.opt_level)
        sys.exit(run_tests(root))
    else:
        if root != REPO:
            copy_sources(root)
        build(root, args.opt_level)
        check(root)


if __name__ == "__main__":
    main()
