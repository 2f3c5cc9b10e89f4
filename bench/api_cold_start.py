"""Cold start of the functions API as Lambda runs it: a fresh process imports the handler and
answers its first requests through Mangum.

Question answered: how long from process spawn until the first answer (target ≤ 1.0 s), and
where the time goes. Each trial spawns `python` with the environment a Lambda would have
(DATABASE_URL pointing at an embedded PostgreSQL this bench starts and migrates), which:

    1. imports `functions.handler` (the app is built at import; no connection is opened),
    2. answers a canned API Gateway v2 event for `GET /health` (no I/O),
    3. answers `GET /api/v1/markets` (first use of the DB: opens the pool, one query).

Times are measured from the parent's clock just before spawn (`time.time()`, shared across
processes), so interpreter start-up and `site` imports are included. The table gives the
median and spread of 10 trials, then the top imports by cumulative time from
`python -X importtime -c "import functions.handler"` (importtime itself adds overhead, so its
total reads higher than the trials' import phase).

On Lambda the DB step also pays a TCP + TLS connect to RDS/the pooler (here: a unix socket),
and Lambda's own init (runtime start, code download) comes before step 1.

Full run:  `.venv/bin/python -m bench.api_cold_start`           (10 trials, top 15 imports)
Quick run: `.venv/bin/python -m bench.api_cold_start --quick`   (3 trials)
Options:   `--trials N`, `--top N`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEALTH_EVENT = ROOT / "tests" / "events" / "health.json"
TARGET_S = 1.0


class LambdaContext:
    """The attributes Mangum reads from Lambda's context object."""

    function_name = "FunctionsApi"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:FunctionsApi"
    memory_limit_in_mb = 1024
    aws_request_id = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def event_for(path: str) -> dict[str, Any]:
    """The canned health event, re-aimed at `path` (a GET without a query string)."""
    event: dict[str, Any] = copy.deepcopy(json.loads(HEALTH_EVENT.read_text()))
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["routeKey"] = f"GET {path}"
    event["requestContext"]["routeKey"] = f"GET {path}"
    event.pop("pathParameters", None)
    return event


# ---------------------------------------------------------------------------------- child


def child(spawn_ts: float) -> None:
    """One cold start; prints JSON with seconds since the parent's spawn for each phase."""
    started = time.time()
    import functions.handler  # the cold import under test

    imported = time.time()
    context: Any = LambdaContext()  # duck-typed: Mangum reads a few attributes
    health = functions.handler.handler(event_for("/health"), context)
    answered_health = time.time()
    markets = functions.handler.handler(event_for("/api/v1/markets"), context)
    answered_db = time.time()
    result = {
        "interpreter_s": started - spawn_ts,
        "import_s": imported - spawn_ts,
        "health_s": answered_health - spawn_ts,
        "db_s": answered_db - spawn_ts,
        "health_status": health["statusCode"],
        "db_status": markets["statusCode"],
        "db_body": markets["body"][:200],
    }
    print(json.dumps(result), flush=True)
    os._exit(0)  # skip teardown (pool close): a Lambda is frozen, not shut down


# ---------------------------------------------------------------------------------- parent


def child_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "local",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "OBJECT_STORE_URL": f"file://{data_dir / 'objects'}",
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "",
    }


def trial(env: dict[str, str]) -> dict[str, Any]:
    spawn_ts = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "bench.api_cold_start", "--child", repr(spawn_ts)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["health_status"] != 200 or result["db_status"] != 200:
        raise RuntimeError(f"unexpected answer: {result}")
    return result


def import_times(env: dict[str, str], top: int) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the slowest imports under `-X importtime`."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import functions.handler"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows: list[tuple[int, int, str]] = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        rows.append((int(cumulative_us), int(self_us), name.rstrip()))
    rows.sort(key=lambda r: r[0], reverse=True)
    return rows[:top]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_cold_start", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="3 trials")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return
    trials = args.trials or (3 if args.quick else 10)

    from emlib.db.embedded import EmbeddedPostgres
    from emlib.db.migrate import migrate

    base = Path(tempfile.mkdtemp(prefix="bench-cold-start-"))
    server = EmbeddedPostgres(base / "pg")
    try:
        database_url = server.start()
        migrate(database_url)
        env = child_env(database_url, base / "data")
        trial(env)  # warm the OS page cache and .pyc files: Lambda's code is on local disk too
        results = [trial(env) for _ in range(trials)]
        print(
            f"functions.handler cold start, {trials} fresh processes; seconds from spawn "
            f"(python {sys.version.split()[0]}, {os.cpu_count()} cores, "
            "embedded PostgreSQL over a unix socket)\n"
        )
        header = f"{'phase (cumulative from spawn)':<44}{'median ms':>10}{'min ms':>9}{'max ms':>9}"
        print(header)
        print("-" * len(header))
        phases = [
            ("interpreter up (python + site)", "interpreter_s"),
            ("import functions.handler", "import_s"),
            ("first answer: GET /health via Mangum", "health_s"),
            ("first DB answer: GET /api/v1/markets", "db_s"),
        ]
        for label, key in phases:
            values = [r[key] for r in results]
            print(f"{label:<44}{ms(statistics.median(values)):>10}{ms(min(values)):>9}{ms(max(values)):>9}")
        first = statistics.median(r["health_s"] for r in results)
        db = statistics.median(r["db_s"] for r in results)
        print(
            f"\nfirst answer median {first:.3f} s, first DB answer median {db:.3f} s vs target "
            f"{TARGET_S:.1f} s: {'met' if db <= TARGET_S else 'missed'}"
        )

        rows = import_times(env, args.top)
        print(
            f"\ntop {args.top} imports by cumulative time "
            "(python -X importtime -c 'import functions.handler')\n"
        )
        header = f"{'cumulative µs':>14}{'self µs':>10}  module"
        print(header)
        print("-" * 60)
        for cumulative_us, self_us, name in rows:
            print(f"{cumulative_us:>14,}{self_us:>10,}  {name}")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
