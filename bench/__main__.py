"""Benchmark runner: list the benches, run one, or run every bench's quick form in one go.

    .venv/bin/python -m bench              # list benches (first docstring line, quick form)
    .venv/bin/python -m bench all          # run the quick form of each, one after another
    .venv/bin/python -m bench NAME [ARGS]  # run bench.NAME with ARGS (same as -m bench.NAME)

A bench is any module in this package. Its quick form is `--quick` when the module accepts
that flag; otherwise an entry in QUICK below (arguments and environment); a bench with
neither is listed but left out of `all`. Each bench runs in its own process, so one that
fails or crashes does not stop the others; `all` exits non-zero if any failed.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Quick forms of benches that take no --quick flag (kept small: a few seconds to a minute each).
QUICK: dict[str, tuple[list[str], dict[str, str]]] = {
    "wal": ([], {"BENCH_WAL_SECONDS": "0.5", "BENCH_WAL_RECOVERY_RECORDS": "100000"}),
    "matching": (["--events", "20000", "--repeat", "1"], {}),
    "memory": (["--orders", "100000"], {}),
    "crash": (["--trials", "3"], {}),
}


@dataclass
class Bench:
    name: str
    summary: str
    quick_args: list[str] | None
    quick_env: dict[str, str] = field(default_factory=dict)


def discover() -> list[Bench]:
    benches = []
    for module in sorted(pkgutil.iter_modules([str(HERE)]), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        source = (HERE / f"{module.name}.py").read_text()
        doc = ast.get_docstring(ast.parse(source)) or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        quick_args: list[str] | None = None
        quick_env: dict[str, str] = {}
        if '"--quick"' in source:
            quick_args = ["--quick"]
        elif module.name in QUICK:
            quick_args, quick_env = QUICK[module.name]
        benches.append(Bench(module.name, summary, quick_args, quick_env))
    return benches


def quick_form(bench: Bench) -> str:
    if bench.quick_args is None:
        return "(full only: not in `all`)"
    env = " ".join(f"{k}={v}" for k, v in bench.quick_env.items())
    return " ".join(part for part in (env, f"-m bench.{bench.name}", *bench.quick_args) if part)


def list_benches(benches: list[Bench]) -> None:
    print(
        "benches (run one: .venv/bin/python -m bench.NAME; all quick forms: .venv/bin/python -m bench all)\n"
    )
    for bench in benches:
        print(f"  {bench.name:<15}{bench.summary}")
        print(f"  {'':<15}quick: {quick_form(bench)}")


def run(module: str, args: list[str], env: dict[str, str]) -> int:
    return subprocess.call([sys.executable, "-m", f"bench.{module}", *args], env={**os.environ, **env})


def run_all(benches: list[Bench]) -> int:
    results: list[tuple[str, int, float]] = []
    for bench in benches:
        if bench.quick_args is None:
            continue
        print(f"\n===== {quick_form(bench)}", flush=True)
        started = time.perf_counter()
        code = run(bench.name, bench.quick_args, bench.quick_env)
        results.append((bench.name, code, time.perf_counter() - started))
    print("\n===== summary")
    print(f"{'bench':<15}{'exit':>6}{'seconds':>10}")
    for name, code, seconds in results:
        print(f"{name:<15}{code:>6}{seconds:>10.1f}")
    skipped = [b.name for b in benches if b.quick_args is None]
    if skipped:
        print(f"not run (no quick form): {', '.join(skipped)}")
    return 1 if any(code != 0 for _, code, _ in results) else 0


def main(argv: list[str]) -> int:
    benches = discover()
    if not argv or argv[0] in ("-h", "--help", "list"):
        list_benches(benches)
        return 0
    if argv[0] == "all":
        return run_all(benches)
    names = {b.name for b in benches}
    if argv[0] not in names:
        print(f"unknown bench {argv[0]!r}; known: {', '.join(sorted(names))}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:], {})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
