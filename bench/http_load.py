"""Load generators for signed `POST /order` that cost the host's machine little CPU.

The problem: an httpx client spends ~2 ms CPU per signed request, more than the host spends
answering it, so on a 2-core machine the generator, not the host, set the measured ceiling.
Here every request is rendered ahead of the run (JSON body, HMAC headers with a fresh
timestamp and a unique nonce, the HTTP/1.1 bytes), and the run only replays bytes:

- `run_wrk`: wrk (C, epoll) replays the rendered requests through a Lua script, closed loop
  (each connection sends its next request when the previous one is answered). Its latency is
  measured from each actual send, so it is subject to coordinated omission: a throughput
  figure, not a latency one.
- `run_raw`: a small generator on raw non-blocking sockets. Open loop: request i is due at
  `t0 + i / rate`; a pacing thread sends it at that time on an idle keep-alive connection (or
  queues it until one frees), and its latency runs from the due time to the last response byte,
  so a stalled host shows up as latency, never as fewer requests (no coordinated omission).
  Closed loop: each connection sends the next request as soon as one is answered.

Rendered requests carry timestamps from just before the run: the host accepts ±120 s, so a run
must start soon after rendering and last well under two minutes. Nonces are unique per run
(`<random tag><index>`), so no request is a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.host_durable import SYMBOLS

WRK_SCRIPT = Path(__file__).with_name("wrk_replay.lua")


@dataclass(frozen=True)
class OrderTarget:
    host: str
    port: int
    key_id: str
    secret: bytes


def order_bodies(accounts: list[str], n: int, seed: int) -> list[bytes]:
    """90 % limit orders around mid 50 (about half of them cross), 10 % market IOC."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(n):
        side = "buy" if rng.random() < 0.5 else "sell"
        body: dict[str, Any] = {
            "account": accounts[rng.randrange(len(accounts))],
            "symbol": SYMBOLS[rng.randrange(len(SYMBOLS))],
            "side": side,
            "quantity": rng.randint(1, 20),
            "client_order_id": f"s{seed}-{i}",
        }
        if rng.random() < 0.1:
            body["type"] = "market"
            body["time_in_force"] = "IOC"
        else:
            offset = rng.randint(-3, 12)
            body["price"] = 50 - offset if side == "buy" else 50 + offset
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def render_orders(target: OrderTarget, bodies: list[bytes], ts_s: int | None = None) -> list[bytes]:
    """Each body as the complete HTTP/1.1 request bytes, HMAC-signed per contract.md."""
    ts_s = int(time.time()) if ts_s is None else ts_s
    tag = secrets.token_hex(8)
    head = f"POST /order HTTP/1.1\r\nHost: {target.host}:{target.port}\r\nContent-Type: application/json\r\n"
    prefix = f"POST|/order|{ts_s}|".encode()
    out: list[bytes] = []
    for i, body in enumerate(bodies):
        nonce = f"{tag}{i:010d}"
        signature = hmac.new(target.secret, prefix + nonce.encode() + b"|" + body, hashlib.sha256).hexdigest()
        out.append(
            (
                f"{head}Content-Length: {len(body)}\r\nX-Key-Id: {target.key_id}\r\nX-Timestamp: {ts_s}\r\n"
                f"X-Nonce: {nonce}\r\nX-Signature: {signature}\r\n\r\n"
            ).encode()
            + body
        )
    return out


@dataclass
class LoadResult:
    """What one generator run saw; latencies in seconds."""

    generator: str
    sent: int = 0
    ok: int = 0
    refused: int = 0  # 4xx
    errors: int = 0  # 5xx, socket errors, unanswered
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the generator's own CPU (all its threads or processes)
    latencies_s: list[float] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)  # open loop: pacer's hand-off time - due time
    queued: int = 0  # open loop: requests that waited for a free connection
    percentiles_ms: dict[float, float] = field(default_factory=dict)  # when only percentiles are known
    codes: dict[str, int] = field(default_factory=dict)
    note: str = ""


# ---------------------------------------------------------------------------------- wrk


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    target: OrderTarget,
    bodies: list[bytes],
    connections: int,
    seconds: float,
    threads: int = 1,
    workdir: Path | None = None,
) -> LoadResult:
    """Closed loop: wrk replays the rendered requests, one file per wrk thread."""
    requests = render_orders(target, bodies)
    workdir = Path(workdir or "/tmp")
    stem = workdir / f"wrk-requests-{os.getpid()}"
    per = len(requests) // threads
    for t in range(threads):
        with open(f"{stem}.{t}", "wb") as fh:
            for request in requests[t * per : (t + 1) * per]:
                fh.write(f"{len(request)}\n".encode() + request)
    argv = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "30s",
    ]
    argv += ["-s", str(WRK_SCRIPT), f"http://{target.host}:{target.port}/order", "--", str(stem)]
    usage0 = os.times()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    usage1 = os.times()
    for t in range(threads):
        Path(f"{stem}.{t}").unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}")
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{proc.stdout}\n{proc.stderr}")
    values = dict(item.split("=") for item in line.split()[1:])
    duration_s = int(values["duration_us"]) / 1e6
    result = LoadResult(
        "wrk",
        sent=int(values["requests"]),
        ok=int(values["s2"]),
        refused=int(values["s4"]),
        errors=int(values["s5"]) + int(values["socket_errors"]),
        wall_s=duration_s,
        cpu_s=(usage1.children_user - usage0.children_user)
        + (usage1.children_system - usage0.children_system),
        percentiles_ms={q: int(values[f"p{q:g}"]) / 1000 for q in (50.0, 99.0, 100.0)},
    )
    if int(values["wrapped"]):
        result.note = f"wrk ran out of rendered requests ({values['wrapped']} replays)"
        result.codes["replayed_nonce"] = int(values["wrapped"])
    return result


# ---------------------------------------------------------------------------------- raw sockets


class _Conn:
    __slots__ = ("buf", "due", "sock", "started")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.started = 0.0
        self.due = 0.0


def _response_end(buf: bytes) -> int:
    """Length of the first complete response in `buf` (Content-Length framing), or 0."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return 0
    length = 0
    lowered = buf[:head_end].lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = lowered.find(b"\r\n", at + 2)
        length = int(lowered[at + 17 : stop if stop >= 0 else head_end])
    end = head_end + 4 + length
    return end if len(buf) >= end else 0


def _problem_code(response: bytes) -> str:
    body = response[response.find(b"\r\n\r\n") + 4 :]
    try:
        return str(json.loads(body).get("code", response[9:12].decode()))
    except (ValueError, AttributeError):
        return response[9:12].decode()


class RawGenerator:
    """Keep-alive HTTP/1.1 over non-blocking sockets: a sender (pacing) and a receiver thread.

    One request in flight per connection (no pipelining). The receiver blocks in epoll, so it
    stamps each response as soon as its last byte is readable.
    """

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.lock = threading.Lock()
        self.idle: deque[_Conn] = deque()
        self.queued: deque[tuple[float, bytes]] = deque()  # (due, request) waiting for a connection
        self.selector = selectors.DefaultSelector()
        self.result = LoadResult("raw sockets")
        self.in_flight = 0
        self.closed_loop_next: list[bytes] | None = None
        self.stop_at = float("inf")
        for _ in range(connections):
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Conn(sock)
            self.idle.append(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _send(self, conn: _Conn, request: bytes, due: float) -> None:
        """Caller holds the lock."""
        conn.due = due
        conn.started = time.perf_counter()
        self.in_flight += 1
        self.result.sent += 1
        try:
            conn.sock.sendall(request)  # ~0.6 KB into an empty socket buffer: never blocks long
        except OSError:
            self.result.errors += 1
            self.result.codes["socket_error"] = self.result.codes.get("socket_error", 0) + 1
            self.in_flight -= 1

    def submit(self, request: bytes, due: float) -> None:
        """Send now on an idle connection, else queue (the wait counts as latency, not lag)."""
        self.result.lags_s.append(time.perf_counter() - due)  # the pacer's own lateness
        with self.lock:
            if self.idle:
                self._send(self.idle.popleft(), request, due)
            else:
                self.queued.append((due, request))
                self.result.queued += 1

    def _answered(self, conn: _Conn, response: bytes, now: float) -> None:
        result = self.result
        result.latencies_s.append(now - conn.due)
        status = int(response[9:12])
        if status < 300:
            result.ok += 1
        else:
            if status < 500:
                result.refused += 1
            else:
                result.errors += 1
            code = _problem_code(response)
            result.codes[code] = result.codes.get(code, 0) + 1
        with self.lock:
            self.in_flight -= 1
            if self.closed_loop_next is not None:
                if self.closed_loop_next and now < self.stop_at:
                    self._send(conn, self.closed_loop_next.pop(), now)
                else:
                    self.idle.append(conn)
            elif self.queued:
                due, request = self.queued.popleft()
                self._send(conn, request, due)
            else:
                self.idle.append(conn)

    def receive_until(self, done: threading.Event, deadline: float) -> None:
        while time.perf_counter() < deadline:
            with self.lock:
                if done.is_set() and self.in_flight == 0 and not self.queued:
                    return
            for key, _ in self.selector.select(timeout=0.05):
                conn: _Conn = key.data
                try:
                    chunk = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                now = time.perf_counter()
                if not chunk:
                    self.selector.unregister(conn.sock)
                    self.result.errors += 1
                    self.result.codes["connection_closed"] = self.result.codes.get("connection_closed", 0) + 1
                    with self.lock:
                        self.in_flight -= 1
                    continue
                conn.buf += chunk
                end = _response_end(conn.buf)
                if end:
                    response, conn.buf = conn.buf[:end], conn.buf[end:]
                    self._answered(conn, response, now)


def run_raw_open(
    target: OrderTarget, bodies: list[bytes], rate: float, connections: int, grace_s: float = 30.0
) -> LoadResult:
    """Open loop at `rate` requests/s for `len(bodies)` requests; latency from each due time."""
    requests = render_orders(target, bodies)
    gen = RawGenerator(target.host, target.port, connections)
    done = threading.Event()
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.05
    last_due = t0 + (len(requests) - 1) / rate
    receiver = threading.Thread(target=gen.receive_until, args=(done, last_due + grace_s), daemon=True)
    receiver.start()
    for i, request in enumerate(requests):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        gen.submit(request, due)
    done.set()
    receiver.join()
    result = gen.result
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - cpu0
    with gen.lock:
        unanswered = gen.in_flight + len(gen.queued)
    if unanswered:
        result.errors += unanswered
        result.codes["unanswered"] = unanswered
        now = time.perf_counter()
        result.latencies_s += [now - last_due] * unanswered  # a lower bound
    gen.close()
    return result


def run_raw_closed(target: OrderTarget, bodies: list[bytes], connections: int, seconds: float) -> LoadResult:
    """Closed loop over `connections` keep-alive connections for `seconds` (wrk's fallback)."""
    requests = render_orders(target, bodies)
    requests.reverse()  # popped from the end
    gen = RawGenerator(target.host, target.port, connections)
    gen.closed_loop_next = requests
    done = threading.Event()
    cpu0 = time.process_time()
    started = time.perf_counter()
    gen.stop_at = started + seconds
    receiver = threading.Thread(target=gen.receive_until, args=(done, gen.stop_at + 30.0), daemon=True)
    receiver.start()
    with gen.lock:
        while gen.idle and requests:
            gen._send(gen.idle.popleft(), requests.pop(), time.perf_counter())
    time.sleep(seconds)
    done.set()
    receiver.join()
    result = gen.result
    result.wall_s = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu0
    if not requests:
        result.note = "the raw closed loop ran out of rendered requests"
    gen.close()
    return result
