"""Orders over HTTP into a real host process: sustained throughput and open-loop accept latency.

Question answered: what a client sees end to end — signed HTTP `POST /order` into
`python -m orderbook_host` under `FSYNC_POLICY=always` — as (a) acknowledged orders/s from N
concurrent closed-loop connections and (b) accept latency at a steady offered rate (default
1,000 orders/s), set beside the disk's own fsync p50/p99 (target: fsync p99 + 5 ms) and the
seed's 200 ms bar, with the host's CPU per answered request.

The default generators (`bench.http_load`) replay requests signed just before each row, so
they cost ~0.03 ms (wrk) and ~0.1 ms (raw sockets) CPU per request instead of httpx's ~2 ms:
(a) runs wrk when it is installed (`apt-get install wrk`; the table says when it is not and
the raw-socket closed loop stands in); its latency is from each send (coordinated omission),
so read (a) for throughput only. (b) is open loop on raw sockets: request i is due at
`t0 + i / rate` and its latency runs from that due time, so a stalled host shows up as latency
instead of as fewer requests. "lag p99" is how late the pacer handed requests over. An
open-loop run stops waiting 30 s after its last send; requests still open then count as
"unanswered" errors, with the latency they had reached (a lower bound).
`--generator httpx` runs the previous Python clients (with cancels in the mix).

Full run:  `.venv/bin/python -m bench.host_http`
Quick run: `.venv/bin/python -m bench.host_http --quick`
Profile:   `.venv/bin/python -m bench.host_http --quick --profile-server` (host under cProfile)
Options:   `--seconds S` (default 10; quick 3), `--concurrency 16,64`, `--rate 1000`,
           `--generator fast|httpx`, `--clients P` httpx processes, `--dir PATH` (DATA_DIR's parent).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pstats
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.host_durable import SYMBOLS, percentile_ms, raw_fsync
from bench.http_load import (
    LoadResult,
    OrderTarget,
    order_bodies,
    run_raw_closed,
    run_raw_open,
    run_wrk,
    wrk_available,
)
from emlib.settings import Settings
from emlib.signing_http import HmacAuth

ACCOUNTS_PER_CLIENT = 50
DEPOSIT_MINOR = 10**12
READY_TIMEOUT_S = 60.0
OPEN_LOOP_GRACE_S = 30.0
OPEN_LOOP_CONNECTIONS = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def signing_auth() -> HmacAuth:
    key = Settings().hmac_keys[-1]
    return HmacAuth(key.id, key.secret)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------- server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    ready_s: float


def start_server(
    data_dir: Path,
    fsync_policy: str = "always",
    extra_env: dict[str, str] | None = None,
    profile_to: Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Server:
    """`python -m orderbook_host` on a free port; returns once /ready answers 200.

    `profile_to`: run it under cProfile (event-loop thread only), stats written at shutdown.
    """
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "ORDERBOOK_URL": url,
        "FSYNC_POLICY": fsync_policy,
        "APP_ENV": "local",
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    started = time.perf_counter()
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115 - lives with the process
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    process = subprocess.Popen(
        [sys.executable, *profiler, "-m", "orderbook_host"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = started + ready_timeout_s
    with httpx.Client(base_url=url, timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"host exited with {process.returncode}; see {log.name}")
            try:
                if client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                process.kill()
                raise RuntimeError(f"host not ready after {ready_timeout_s} s; see {log.name}")
            time.sleep(0.02)
    return Server(process, url, data_dir, time.perf_counter() - started)


def stop_server(server: Server, sig: int = signal.SIGTERM) -> None:
    """Graceful stop. uvicorn re-raises the signal after shutdown: SIGINT lets cProfile write."""
    server.process.send_signal(sig)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def accounts_for(client_id: int) -> list[str]:
    return [f"load-{client_id}-{i}" for i in range(ACCOUNTS_PER_CLIENT)]


def set_up_markets(url: str, clients: int) -> None:
    with httpx.Client(base_url=url, auth=signing_auth(), timeout=10.0) as client:
        for symbol in SYMBOLS:
            response = client.post("/markets", json={"symbol": symbol, "kind": "binary"})
            assert response.status_code in (201, 409), response.text
        for client_id in range(clients):
            for account in accounts_for(client_id):
                response = client.post(f"/accounts/{account}/deposit", json={"amount_minor": DEPOSIT_MINOR})
                assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------- client process


class OrderFlow:
    """80 % limit around mid 50, 10 % market, 10 % cancel of an order this client saw resting."""

    def __init__(self, client_id: int, seed: int) -> None:
        self.rng = random.Random(seed * 1000 + client_id)
        self.accounts = accounts_for(client_id)
        self.resting: list[tuple[str, int]] = []
        self.client_id = client_id
        self.count = 0

    def next_request(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.1 and self.resting:
            account, oid = self.resting.pop(rng.randrange(len(self.resting)))
            return "/cancel", {"account": account, "server_order_id": oid}
        self.count += 1
        side = "buy" if rng.random() < 0.5 else "sell"
        body: dict[str, Any] = {
            "account": rng.choice(self.accounts),
            "symbol": SYMBOLS[rng.randrange(len(SYMBOLS))],
            "side": side,
            "quantity": rng.randint(1, 20),
            "client_order_id": f"b{self.client_id}-{self.count}",
        }
        if roll < 0.2:
            body["type"] = "market"
            body["time_in_force"] = "IOC"
        else:
            offset = rng.randint(-3, 12)
            body["price"] = 50 - offset if side == "buy" else 50 + offset
        return "/order", body

    def note(self, path: str, body: dict[str, Any], response: httpx.Response) -> None:
        if path == "/order" and response.status_code == 201:
            ack = response.json()
            if ack["status"] in ("open", "partially_filled"):
                self.resting.append((body["account"], ack["server_order_id"]))
                if len(self.resting) > 5000:
                    del self.resting[:1000]


@dataclass
class Tally:
    ok: int = 0
    refused: int = 0  # 4xx with a code (e.g. order_not_open): answered, no state change
    errors: int = 0  # transport errors and 5xx
    codes: dict[str, int] = field(default_factory=dict)  # problem code (or status) -> count


def classify(tally: Tally, response: httpx.Response | None) -> None:
    if response is None or response.status_code >= 500:
        tally.errors += 1
        key = "transport_error" if response is None else str(response.status_code)
    elif response.status_code >= 400:
        tally.refused += 1
        try:
            key = str(response.json().get("code", response.status_code))
        except ValueError:
            key = str(response.status_code)
    else:
        tally.ok += 1
        return
    tally.codes[key] = tally.codes.get(key, 0) + 1


async def closed_loop(
    url: str, client_id: int, concurrency: int, seconds: float, seed: int
) -> dict[str, Any]:
    flow = OrderFlow(client_id, seed)
    tally = Tally()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, auth=signing_auth(), limits=limits, timeout=30.0) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                path, body = flow.next_request()
                t0 = time.perf_counter()
                response: httpx.Response | None
                try:
                    response = await client.post(path, json=body)
                except httpx.TransportError:
                    response = None
                latencies.append(time.perf_counter() - t0)
                classify(tally, response)
                if response is not None:
                    flow.note(path, body, response)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"tally": vars(tally), "latencies_s": latencies, "wall_s": wall_s, "cpu_s": cpu_s, "lag_s": []}


async def open_loop(url: str, client_id: int, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    flow = OrderFlow(client_id, seed)
    tally = Tally()
    latencies: list[float] = []
    lags: list[float] = []
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, auth=signing_auth(), limits=limits, timeout=30.0) as client:
        # warm the connection pool so the first second does not measure TCP connects
        await asyncio.gather(*(client.get("/health") for _ in range(32)))
        loop = asyncio.get_running_loop()

        async def send(due: float) -> None:
            lags.append(loop.time() - due)
            path, body = flow.next_request()
            response: httpx.Response | None
            try:
                response = await client.post(path, json=body)
            except httpx.TransportError:
                response = None
            latencies.append(loop.time() - due)  # from the due time: no coordinated omission
            classify(tally, response)
            if response is not None:
                flow.note(path, body, response)

        total = int(rate * seconds)
        tasks: list[asyncio.Task[None]] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        t0 = loop.time() + 0.05
        for i in range(total):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(due)))
        # An overloaded host builds a backlog that could take minutes to drain: stop waiting
        # OPEN_LOOP_GRACE_S after the last send and count what is left as unanswered, with the
        # latency it had reached by then (a lower bound).
        _, pending = await asyncio.wait(tasks, timeout=OPEN_LOOP_GRACE_S)
        if pending:
            now = loop.time()
            for task in pending:
                task.cancel()
            unanswered = total - len(latencies)
            tally.errors += unanswered
            tally.codes["unanswered"] = unanswered
            latencies += [now - (t0 + i / rate) for i in range(total - unanswered, total)]
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"tally": vars(tally), "latencies_s": latencies, "wall_s": wall_s, "cpu_s": cpu_s, "lag_s": lags}


def client_main(args: argparse.Namespace) -> None:
    if args.client == "closed":
        result = asyncio.run(
            closed_loop(args.url, args.client_id, args.concurrency_one, args.seconds, args.seed)
        )
    else:
        result = asyncio.run(open_loop(args.url, args.client_id, args.rate_one, args.seconds, args.seed))
    json.dump(result, sys.stdout)


def run_clients(
    url: str, mode: str, clients: int, seconds: float, seed: int, concurrency: int = 0, rate: float = 0.0
) -> list[dict[str, Any]]:
    """Start `clients` load-generator processes at once and collect their JSON results."""
    base = [sys.executable, "-m", "bench.host_http", "--client", mode, "--url", url]
    base += ["--seconds", str(seconds), "--seed", str(seed)]
    procs = []
    for client_id in range(clients):
        share = ["--concurrency-one", str(max(1, concurrency // clients)), "--rate-one", str(rate / clients)]
        procs.append(subprocess.Popen([*base, "--client-id", str(client_id), *share], stdout=subprocess.PIPE))
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=seconds * 3 + OPEN_LOOP_GRACE_S + 120)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"load generator exited with {proc.returncode}")
        results.append(json.loads(out))
    return results


@dataclass
class Summary:
    ok: int
    refused: int
    errors: int
    wall_s: float
    latencies_s: list[float]
    lags_s: list[float]
    client_cpu: float  # core-seconds per second, summed over client processes
    server_cpu: float
    codes: dict[str, int]


def summarize(results: list[dict[str, Any]], server_cpu_s: float) -> Summary:
    wall_s = max(r["wall_s"] for r in results)
    merged: dict[str, int] = {}
    for r in results:
        for code, count in r["tally"]["codes"].items():
            merged[code] = merged.get(code, 0) + count
    return Summary(
        ok=sum(r["tally"]["ok"] for r in results),
        refused=sum(r["tally"]["refused"] for r in results),
        errors=sum(r["tally"]["errors"] for r in results),
        wall_s=wall_s,
        latencies_s=[x for r in results for x in r["latencies_s"]],
        lags_s=[x for r in results for x in r["lag_s"]],
        client_cpu=sum(r["cpu_s"] for r in results) / wall_s,
        server_cpu=server_cpu_s / wall_s,
        codes=merged,
    )


# ---------------------------------------------------------------------------------- main

CLOSED_LOOP_RATE_CAP = 8000  # requests rendered per second of a closed-loop row (wrk wraps past it)


@dataclass
class Row:
    label: str
    offered: str
    generator: str
    ok: int
    refused: int
    errors: int
    wall_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float | None
    server_cpu_s: float
    client_cpu_s: float
    codes: dict[str, int]
    note: str = ""


def row_from_summary(label: str, offered: str, s: Summary) -> Row:
    return Row(
        label,
        offered,
        "httpx",
        s.ok,
        s.refused,
        s.errors,
        s.wall_s,
        percentile_ms(s.latencies_s, 0.5),
        percentile_ms(s.latencies_s, 0.99),
        max(s.latencies_s) * 1000,
        percentile_ms(s.lags_s, 0.99) if s.lags_s else None,
        s.server_cpu * s.wall_s,
        s.client_cpu * s.wall_s,
        s.codes,
    )


def row_from_load(label: str, offered: str, r: LoadResult, server_cpu_s: float) -> Row:
    if r.percentiles_ms:  # wrk reports percentiles only
        p50, p99, top = r.percentiles_ms[50.0], r.percentiles_ms[99.0], r.percentiles_ms[100.0]
    else:
        p50, p99 = percentile_ms(r.latencies_s, 0.5), percentile_ms(r.latencies_s, 0.99)
        top = max(r.latencies_s) * 1000
    note = r.note
    if r.queued:
        note = (note + "; " if note else "") + f"{r.queued:,} requests waited for a free connection"
    return Row(
        label,
        offered,
        r.generator,
        r.ok,
        r.refused,
        r.errors,
        r.wall_s,
        p50,
        p99,
        top,
        percentile_ms(r.lags_s, 0.99) if r.lags_s else None,
        server_cpu_s,
        r.cpu_s,
        r.codes,
        note,
    )


def print_rows(rows: list[Row]) -> None:
    header = (
        f"{'mode':<17}{'offered':>9}{'generator':>13}{'acked/s':>9}{'refused':>8}{'errors':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lag p99':>8}{'host CPU':>9}{'ms/req':>7}"
        f"{'gen CPU':>8}{'ms/req':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        answered = max(1, r.ok + r.refused)
        lag = f"{r.lag_p99_ms:.1f}" if r.lag_p99_ms is not None else "-"
        gen_cpu = f"{r.client_cpu_s / r.wall_s:>8.0%}{r.client_cpu_s / answered * 1000:>7.3f}"
        print(
            f"{r.label:<17}{r.offered:>9}{r.generator:>13}{r.ok / r.wall_s:>9,.0f}"
            f"{r.refused:>8,}{r.errors:>7,}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.1f}{lag:>8}{r.server_cpu_s / r.wall_s:>9.0%}"
            f"{r.server_cpu_s / answered * 1000:>7.3f}{gen_cpu}"
        )


def fast_rows(
    server: Server, widths: list[int], rate: float, seconds: float, seed: int, work: Path
) -> tuple[list[Row], str]:
    """Closed loop with wrk (raw sockets when wrk is absent), open loop with raw sockets."""
    key = Settings().hmac_keys[-1]
    url = urlsplit(server.url)
    target = OrderTarget(url.hostname or "127.0.0.1", url.port or 80, key.id, key.secret.encode())
    accounts = accounts_for(0)
    pid = server.process.pid
    have_wrk = wrk_available()
    rows: list[Row] = []
    for i, width in enumerate(widths):
        bodies = order_bodies(accounts, int(CLOSED_LOOP_RATE_CAP * seconds), seed * 100 + i)
        cpu0 = cpu_seconds(pid)
        if have_wrk:
            result = run_wrk(target, bodies, width, seconds, workdir=work)
        else:
            result = run_raw_closed(target, bodies, width, seconds)
        rows.append(row_from_load("(a) closed loop", f"{width} conn", result, cpu_seconds(pid) - cpu0))
    bodies = order_bodies(accounts, int(rate * seconds), seed * 100 + 99)
    cpu0 = cpu_seconds(pid)
    result = run_raw_open(target, bodies, rate, OPEN_LOOP_CONNECTIONS, OPEN_LOOP_GRACE_S)
    rows.append(row_from_load("(b) open loop", f"{rate:,.0f}/s", result, cpu_seconds(pid) - cpu0))
    load = (
        "closed loop: "
        + (
            "wrk 4.1 (C) replaying"
            if have_wrk
            else "wrk NOT INSTALLED (apt-get install wrk); raw-socket replay of"
        )
        + " pre-signed requests, latency from each send (coordinated omission: throughput only); "
        f"open loop: raw sockets, pre-signed requests, {OPEN_LOOP_CONNECTIONS} keep-alive connections, "
        "latency from each due time. Orders only (90 % limit, 10 % market IOC), 50 accounts."
    )
    return rows, load


def httpx_rows(
    server: Server, clients: int, widths: list[int], rate: float, seconds: float, seed: int
) -> tuple[list[Row], str]:
    """The original generator: httpx.AsyncClient processes, signing per request, with cancels."""
    pid = server.process.pid
    rows: list[Row] = []
    plan: list[tuple[str, str, int, float]] = [("closed", f"{k} conn", k, 0.0) for k in widths]
    plan.append(("open", f"{rate:,.0f}/s", 0, rate))
    for mode, offered, concurrency, r in plan:
        cpu0 = cpu_seconds(pid)
        results = run_clients(server.url, mode, clients, seconds, seed, concurrency, r)
        s = summarize(results, cpu_seconds(pid) - cpu0)
        label = "(a) closed loop" if mode == "closed" else "(b) open loop"
        rows.append(row_from_summary(label, offered, s))
    load = (
        f"{clients} httpx.AsyncClient process(es), signing each request (~2 ms CPU each); "
        "80 % limit, 10 % market, 10 % cancel of a resting order."
    )
    return rows, load


def print_host_pauses(url: str) -> None:
    """What stopped the host's event loop over the whole run, from its /metrics: cyclic GC pauses
    by generation (count, total, largest bucket) and snapshots taken."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    parts = []
    for gen in ("0", "1", "2"):
        count = samples.get(f'orderbook_gc_pause_seconds_count{{generation="{gen}"}}', 0.0)
        if not count:
            continue
        total = samples.get(f'orderbook_gc_pause_seconds_sum{{generation="{gen}"}}', 0.0)
        top = min(
            (
                float(name.split('le="')[1].split('"')[0])
                for name, value in samples.items()
                if name.startswith("orderbook_gc_pause_seconds_bucket")
                and f'generation="{gen}"' in name
                and value >= count
            ),
            default=float("inf"),
        )
        parts.append(f"gen{gen} {count:.0f} pauses, {total * 1000:.0f} ms in all, each <= {top * 1000:g} ms")
    fsyncs = samples.get("orderbook_wal_fsync_seconds_count", 0.0)
    buckets = sorted(
        (float(name.split('le="')[1].split('"')[0]), value)
        for name, value in samples.items()
        if name.startswith("orderbook_wal_fsync_seconds_bucket")
    )
    slow = {le: fsyncs - value for le, value in buckets if le in (0.005, 0.025, 0.1)}
    if fsyncs:
        print(
            f"WAL fsyncs over the run: {fsyncs:.0f}; slower than 5 / 25 / 100 ms: "
            f"{slow.get(0.005, 0):.0f} / {slow.get(0.025, 0):.0f} / {slow.get(0.1, 0):.0f}"
        )
    snapshots = samples.get("orderbook_snapshots_total", 0.0)
    cut_ms = samples.get("orderbook_snapshot_pause_seconds_sum", 0.0) * 1000
    print(
        f"host pauses over the run: {'; '.join(parts) or 'no GC pause'}; {snapshots:.0f} snapshots taken, "
        f"their cuts (fork) stopped the loop {cut_ms:.1f} ms in all"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.host_http", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument(
        "--generator",
        choices=("fast", "httpx"),
        default="fast",
        help="fast: wrk + raw sockets replaying pre-signed requests; httpx: the Python client",
    )
    parser.add_argument("--clients", type=int, default=1, help="httpx load-generator processes")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile-server", action="store_true", help="run the host under cProfile")
    # internal: one load-generator process
    parser.add_argument("--client", choices=("closed", "open"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--client-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency-one", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--rate-one", type=float, default=1000.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    widths = [int(x) for x in args.concurrency.split(",")]

    base = Path(tempfile.mkdtemp(prefix="bench-host-http-", dir=args.dir))
    server: Server | None = None
    try:
        data_dir = base / "data"
        data_dir.mkdir()
        fs_p50, fs_p99, fs_max, fs_n = raw_fsync(data_dir, 2.0)
        profile_path = base / "host.prof" if args.profile_server else None
        server = start_server(data_dir, profile_to=profile_path)
        set_up_markets(server.url, args.clients if args.generator == "httpx" else 1)
        print(
            f"host: python -m orderbook_host, FSYNC_POLICY=always, DATA_DIR={data_dir}; "
            f"ready {server.ready_s:.2f} s after spawn (empty WAL)"
        )
        print(
            f"disk: os.write(100 B) + fdatasync in DATA_DIR  p50 {fs_p50:.3f} ms  p99 {fs_p99:.3f} ms  "
            f"max {fs_max:.3f} ms ({fs_n} samples)"
        )
        if args.generator == "httpx":
            rows, load = httpx_rows(server, args.clients, widths, args.rate, seconds, args.seed)
        else:
            rows, load = fast_rows(server, widths, args.rate, seconds, args.seed, base)
        print(f"load: {load} {os.cpu_count()} cores shared with the host; {seconds:g} s per row\n")
        print_rows(rows)
        open_row = next((r for r in rows if r.label.startswith("(b)")), None)
        if open_row is not None:
            p99 = open_row.p99_ms
            print(
                f"\nopen-loop accept p99 {p99:.2f} ms vs target fsync p99 + 5 ms = {fs_p99 + 5:.2f} ms "
                f"({'met' if p99 <= fs_p99 + 5 else 'missed'}); seed bar 200 ms "
                f"({'met' if p99 <= 200 else 'missed'})."
            )
            if open_row.client_cpu_s > 0.9 * open_row.wall_s:
                print("note: the load generator was CPU-saturated; latencies include client queueing.")
        for r in rows:
            if r.codes:
                print(f"{r.label} {r.offered}: refused/errors by code: {dict(sorted(r.codes.items()))}")
            if r.note:
                print(f"{r.label} {r.offered}: {r.note}")
        print(
            "acked = 2xx; refused = 4xx with a code; CPU 100 % = one core busy; ms/req = CPU per answered "
            "request; lag p99 = how late the open-loop pacer handed requests over against the timetable."
        )
        print_host_pauses(server.url)
        if profile_path is not None:
            stop_server(server, signal.SIGINT)
            server = None
            out = io.StringIO()
            stats = pstats.Stats(str(profile_path), stream=out)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
            print("\ncProfile of the host's event-loop thread over all rows (by own time, then cumulative):")
            print(out.getvalue())
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
