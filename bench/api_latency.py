"""Latency of the public API under a steady offered load: the snapshot read and order entry.

Question answered: with the real stack on this machine (functions app under uvicorn, a real
orderbook host with FSYNC_POLICY=always, embedded PostgreSQL), what latency does a client see
at 200 requests/s for

    (a) `GET /api/v1/market/{symbol}/snapshot`  (API → signed host call → book)   target p99 ≤ 20 ms
    (b) `POST /api/v1/order`  (JWT + user row, two rate-limit buckets in the KV port,
        signed host call with fsync, the ack remembered in PostgreSQL)           target p99 ≤ 30 ms

Open loop avoids coordinated omission: request i is due at `t0 + i / rate` and its latency is
measured from that due time, so a stalled server (or client) shows up as latency, not as fewer
requests. The load generator runs in separate processes (`--clients`, default 1), each an
httpx.AsyncClient on its own event loop; on 2 cores they compete with uvicorn, the host and
PostgreSQL, so the table shows each side's CPU (100 % = one core) and the whole machine's.
"lag p99" is how late the generator actually sent against its timetable: a large lag means the
client, not the server, was the bottleneck. The first `--warmup` seconds of each phase are sent
but not counted (connection set-up, first-use caches).

Set-up: the market is created directly on the host (signed `POST /markets`, open); the snapshot
route proxies to the host and order entry forwards to it, neither reads the `markets` table.
Traders: two register through the API (and log in); the rest are created with
`functions.auth.create_user` (funded through the host's deposit) with tokens minted by
`TokenCodec`, because login/register share a per-IP bucket of 10 per minute. Orders alternate
buy/sell at one price (each sell crosses the buy before it) over `--users` accounts, so each
account sends rate/users orders/s, under the default per-account bucket (20 burst, 10/s). The
per-IP order bucket (default 60 burst, 30/s) would refuse a single-address load generator, so
this bench raises RATE_LIMIT_ORDER_IP_BURST / _PER_S for the functions process (a production
client fleet comes from many addresses).

Full run:  `.venv/bin/python -m bench.api_latency`            (10 s per phase at 200/s)
Quick run: `.venv/bin/python -m bench.api_latency --quick`    (3 s per phase)
Options:   `--rate 200`, `--seconds 10`, `--warmup 2`, `--users 40`, `--clients 1` (load
           generator processes), `--workers 1` (uvicorn workers), `--fsync always|never`.

Reading it: "fn CPU" / "host CPU" are core-seconds per second of each server (all workers);
divided by the rate they give CPU per request, which bounds the rate one core can carry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.host_durable import percentile_ms
from bench.host_http import OPEN_LOOP_GRACE_S, Tally, classify, cpu_seconds, free_port, signing_auth

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "BENCH-API-1"
PASSWORD = "bench-password-0123"
DEPOSIT_MINOR = 10**9
ORDER_PRICE = 50
READY_TIMEOUT_S = 60.0
TARGET_P99_MS = {"snapshot": 20.0, "order": 30.0}


# ---------------------------------------------------------------------------------- load generator


async def open_loop(
    url: str,
    mode: str,
    tokens: list[str],
    rate: float,
    seconds: float,
    warmup_s: float,
    start_at: float,
    client_id: int,
    clients: int,
) -> dict[str, Any]:
    """Send this client's share (i % clients == client_id) of a shared timetable."""
    tally = Tally()
    latencies: list[float] = []
    lags: list[float] = []
    warm_n = int(rate * warmup_s)
    total = warm_n + int(rate * seconds)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        await asyncio.gather(*(client.get("/health") for _ in range(16)))
        loop = asyncio.get_running_loop()
        # the timetable is in wall-clock time shared by every generator process
        origin = loop.time() + (start_at - time.time())

        async def send(i: int, due: float) -> None:
            if i >= warm_n:
                lags.append(loop.time() - due)
            response: httpx.Response | None
            try:
                if mode == "snapshot":
                    response = await client.get(f"/api/v1/market/{SYMBOL}/snapshot")
                else:
                    side = "buy" if i % 2 == 0 else "sell"
                    body = {
                        "symbol": SYMBOL,
                        "side": side,
                        "type": "limit",
                        "price": ORDER_PRICE,
                        "quantity": 1,
                        "client_order_id": f"b-{start_at:.0f}-{i}",
                    }
                    token = tokens[i % len(tokens)]
                    response = await client.post(
                        "/api/v1/order", json=body, headers={"Authorization": f"Bearer {token}"}
                    )
            except httpx.TransportError:
                response = None
            if i >= warm_n:
                latencies.append(loop.time() - due)  # from the due time: no coordinated omission
                classify(tally, response)

        tasks: list[asyncio.Task[None]] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        measuring = False
        for i in range(client_id, total, clients):
            due = origin + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i >= warm_n and not measuring:  # CPU over the measured window only
                measuring = True
                cpu0, wall0 = time.process_time(), time.perf_counter()
            tasks.append(asyncio.create_task(send(i, due)))
        _, pending = await asyncio.wait(tasks, timeout=OPEN_LOOP_GRACE_S)
        if pending:
            for task in pending:
                task.cancel()
            tally.errors += len(pending)
            tally.codes["unanswered"] = len(pending)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"tally": vars(tally), "latencies_s": latencies, "lag_s": lags, "cpu_s": cpu_s, "wall_s": wall_s}


def client_main(args: argparse.Namespace) -> None:
    tokens = json.loads(Path(args.tokens).read_text()) if args.tokens else []
    result = asyncio.run(
        open_loop(
            args.url,
            args.client,
            tokens,
            args.rate,
            args.seconds,
            args.warmup,
            args.start_at,
            args.client_id,
            args.clients,
        )
    )
    json.dump(result, sys.stdout)


# ---------------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    url: str


def spawn(name: str, argv: list[str], env: dict[str, str], url: str, log_dir: Path) -> Child:
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log.name}")
            try:
                if client.get(f"{url}/ready").status_code == 200:
                    return Child(name, process, url)
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S} s; see {log.name}")
            time.sleep(0.05)


def stop(child: Child) -> None:
    if child.process.poll() is None:
        child.process.terminate()
        try:
            child.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds per process of a process and its live children (uvicorn --workers forks
    workers, and may replace one that stops answering its pings)."""
    pids = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    out: dict[int, float] = {}
    for one in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            out[one] = cpu_seconds(one)
    return out


def cpu_delta_s(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two `tree_cpu_s` readings by the processes alive at the second one
    (a worker that exited meanwhile is not counted: an undercount, never negative)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def set_up_traders(functions_url: str, host_url: str, env: dict[str, str], users: int) -> list[str]:
    """Bearer tokens for `users` funded traders (2 registered through the API)."""
    from emlib.resources import Resources
    from emlib.settings import Settings
    from functions.auth import TokenCodec, create_user
    from functions.orderbook_client import OrderbookClient

    tokens: list[str] = []
    stamp = f"{int(time.time()) % 100_000:05d}"
    with httpx.Client(base_url=functions_url, timeout=30.0) as api:
        for n in range(min(2, users)):
            credentials = {"username": f"api-{stamp}-{n}", "password": PASSWORD}
            registered = api.post("/api/v1/auth/register", json=credentials)
            assert registered.status_code == 201, registered.text
            login = api.post("/api/v1/auth/login", json=credentials)
            assert login.status_code == 200, login.text
            tokens.append(login.json()["access_token"])
    keys = ("APP_ENV", "DATABASE_URL", "DATA_DIR", "ORDERBOOK_URL", "OBJECT_STORE_URL")
    settings = Settings.model_validate({k: env[k] for k in keys})
    resources = Resources(settings)
    orderbook = OrderbookClient(settings)
    codec = TokenCodec(settings)
    try:
        for n in range(len(tokens), users):
            principal, _ = create_user(
                resources,
                f"load-{stamp}-{n}",
                PASSWORD,
                fund=lambda user_id: orderbook.deposit(user_id, DEPOSIT_MINOR),
            )
            tokens.append(codec.mint(principal, time.time())[0])
    finally:
        orderbook.close()
        resources.close()
    return tokens


def run_phase(
    mode: str, functions_url: str, tokens_file: Path, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    start_at = time.time() + 1.5  # every generator has started its interpreter by then
    base = [sys.executable, "-m", "bench.api_latency", "--client", mode, "--url", functions_url]
    base += ["--tokens", str(tokens_file), "--rate", str(args.rate), "--seconds", str(args.seconds)]
    base += ["--warmup", str(args.warmup), "--start-at", repr(start_at), "--clients", str(args.clients)]
    procs = [
        subprocess.Popen([*base, "--client-id", str(k)], stdout=subprocess.PIPE, cwd=ROOT)
        for k in range(args.clients)
    ]
    # server and machine CPU over the measured window only (after the warm-up)
    time.sleep(max(0.0, start_at + args.warmup - time.time()))
    cpu0 = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    busy0, all0 = machine_busy_s()
    wall0 = time.perf_counter()
    time.sleep(args.seconds)
    elapsed_s = time.perf_counter() - wall0
    cpu = {name: cpu_delta_s(cpu0[name], tree_cpu_s(pid)) / elapsed_s for name, pid in pids.items()}
    busy1, all1 = machine_busy_s()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.seconds * 3 + OPEN_LOOP_GRACE_S + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator exited with {proc.returncode}")
        results.append(json.loads(out))
    codes: dict[str, int] = {}
    for r in results:
        for code, count in r["tally"]["codes"].items():
            codes[code] = codes.get(code, 0) + count
    cores = os.cpu_count() or 1
    return {
        "ok": sum(r["tally"]["ok"] for r in results),
        "refused": sum(r["tally"]["refused"] for r in results),
        "errors": sum(r["tally"]["errors"] for r in results),
        "latencies_s": [x for r in results for x in r["latencies_s"]],
        "lags_s": [x for r in results for x in r["lag_s"]],
        "client_cpu": sum(r["cpu_s"] for r in results) / max(r["wall_s"] for r in results),
        "server_cpu": cpu,
        "machine_busy": (busy1 - busy0) / max(1e-9, all1 - all0) * cores,
        "codes": codes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per phase")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes for the API")
    parser.add_argument("--fsync", choices=("always", "never"), default="always")
    # internal: one load-generator process
    parser.add_argument("--client", choices=("snapshot", "order"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", default="", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--client-id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0

    from emlib.db.embedded import EmbeddedPostgres
    from emlib.db.migrate import migrate

    base = Path(tempfile.mkdtemp(prefix="bench-api-latency-"))
    server = EmbeddedPostgres(base / "pg")
    children: list[Child] = []
    try:
        database_url = server.start()
        migrate(database_url)
        host_url = f"http://127.0.0.1:{free_port()}"
        functions_url = f"http://127.0.0.1:{free_port()}"
        common = {
            **os.environ,
            "APP_ENV": "local",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            "ORDERBOOK_URL": host_url,
        }
        host_env = {
            **common,
            "DATA_DIR": str(base / "host"),
            "FSYNC_POLICY": args.fsync,
            "OBJECT_STORE_URL": f"file://{base / 'host' / 'objects'}",
        }
        children.append(
            spawn("orderbook-host", [sys.executable, "-m", "orderbook_host"], host_env, host_url, base)
        )
        functions_env = {
            **common,
            "DATABASE_URL": database_url,
            "DATA_DIR": str(base / "functions"),
            "OBJECT_STORE_URL": f"file://{base / 'functions' / 'objects'}",
            # one client address sends everything: lift the per-IP order bucket (see docstring)
            "RATE_LIMIT_ORDER_IP_BURST": "100000",
            "RATE_LIMIT_ORDER_IP_PER_S": "100000",
        }
        port = functions_url.rsplit(":", 1)[1]
        uvicorn = [
            sys.executable,
            "-m",
            "uvicorn",
            "functions.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            port,
        ]
        uvicorn += ["--no-access-log", "--workers", str(args.workers)]
        children.append(spawn("functions", uvicorn, functions_env, functions_url, base))

        with httpx.Client(base_url=host_url, auth=signing_auth(), timeout=10.0) as host:
            created = host.post("/markets", json={"symbol": SYMBOL, "kind": "binary"})
            assert created.status_code == 201, created.text
        tokens = set_up_traders(functions_url, host_url, functions_env, args.users)
        tokens_file = base / "tokens.json"
        tokens_file.write_text(json.dumps(tokens))
        pids = {child.name: child.process.pid for child in children}

        load1, load5, _ = os.getloadavg()
        print(
            f"machine load average before the run: {load1:.1f} (1 min), {load5:.1f} (5 min) on "
            f"{os.cpu_count()} cores; other processes' load competes with this bench"
        )
        print(
            f"functions: uvicorn functions.app:app ({args.workers} worker(s)); "
            "host: python -m orderbook_host, "
            f"FSYNC_POLICY={args.fsync}; embedded PostgreSQL; {os.cpu_count()} cores shared with "
            f"{args.clients} load-generator process(es)"
        )
        print(
            f"open loop {args.rate:,.0f}/s for {args.seconds:g} s after {args.warmup:g} s warm-up; orders: "
            f"{args.users} accounts alternating buy/sell 1 @ {ORDER_PRICE} (each sell crosses); "
            "per-IP order bucket lifted\n"
        )
        header = (
            f"{'route':<34}{'offered':>8}{'ok':>7}{'refused':>8}{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'target':>8}{'lag p99':>8}{'fn CPU':>7}{'host CPU':>9}{'client CPU':>11}"
            f"{'machine':>8}"
        )
        print(header)
        print("-" * len(header))
        notes: list[str] = []
        for mode, label in (
            ("snapshot", "GET /api/v1/market/{s}/snapshot"),
            ("order", "POST /api/v1/order"),
        ):
            s = run_phase(mode, functions_url, tokens_file, args, pids)
            p99 = percentile_ms(s["latencies_s"], 0.99)
            target = TARGET_P99_MS[mode]
            print(
                f"{label:<34}{args.rate:>8,.0f}{s['ok']:>7,}{s['refused']:>8,}{s['errors']:>7,}"
                f"{percentile_ms(s['latencies_s'], 0.5):>8.1f}{p99:>8.1f}"
                f"{max(s['latencies_s'], default=0) * 1000:>8.1f}"
                f"{('≤' + format(target, 'g')):>8}{percentile_ms(s['lags_s'], 0.99):>8.1f}"
                f"{s['server_cpu']['functions']:>7.0%}{s['server_cpu']['orderbook-host']:>9.0%}"
                f"{s['client_cpu']:>11.0%}{s['machine_busy']:>8.0%}"
            )
            notes.append(
                f"{label}: p99 {p99:.1f} ms vs target {target:g} ms: {'met' if p99 <= target else 'missed'}"
            )
            if s["codes"]:
                notes.append(f"{label}: refused/errors by code {dict(sorted(s['codes'].items()))}")
            if s["client_cpu"] > 0.9 * args.clients:
                notes.append(
                    f"{label}: a load generator was CPU-saturated; latencies include client queueing"
                )
            if s["machine_busy"] > 0.9 * (os.cpu_count() or 1):
                notes.append(f"{label}: the machine's cores were saturated during the run")
        print()
        for note in notes:
            print(note)
        print(
            "CPU: 100 % = one core busy (fn = uvicorn functions process; machine = all processes "
            "incl. PostgreSQL and the generator); lag p99 = how late the generator sent."
        )
    finally:
        for child in reversed(children):
            stop(child)
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
