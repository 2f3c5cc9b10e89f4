"""README's first command, driven as a newcomer would: start everything, open what it
prints, press Ctrl-C, start again on the same data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from emlib.settings import Settings
from emlib.signing_http import HmacAuth

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.ports = {name: _free_port() for name in ("functions", "orderbook", "runner")}
        self.env = dict(
            os.environ,
            DATA_DIR=str(data_dir),
            DATABASE_URL="",
            FUNCTIONS_PORT=str(self.ports["functions"]),
            ORDERBOOK_URL=f"http://127.0.0.1:{self.ports['orderbook']}",
            PLAYWRIGHT_RUNNER_URL=f"http://127.0.0.1:{self.ports['runner']}",
            SNAPSHOT_INTERVAL_S="1",
            # Tests run the pure engine unless told otherwise (devstack would build mypyc).
            ORDERBOOK_ENGINE=os.environ.get("ORDERBOOK_ENGINE", "pure"),
        )
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        url: list[str] = []

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if "is running. Open " in line:
                    url.append(line.split("Open ", 1)[1].strip())
                    ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(START_TIMEOUT_S):
            self.process.kill()
            raise AssertionError("stack did not come up:\n" + "".join(self.lines[-60:]))
        return url[0]

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def interrupt(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(60)
        self.reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def _book(stack: Stack, symbol: str) -> dict[str, object]:
    key = Settings().hmac_keys[-1]
    response = httpx.get(
        f"http://127.0.0.1:{stack.ports['orderbook']}/snapshot",
        params={"symbol": symbol},
        auth=HmacAuth(key.id, key.secret),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_first_command_runs_everything_and_ctrl_c_leaves_nothing(server_tmp_path: Path) -> None:
    stack = Stack(server_tmp_path / "data")
    url = stack.start()
    try:
        assert url == f"http://127.0.0.1:{stack.ports['functions']}/docs"
        assert httpx.get(url, timeout=5).status_code == 200
        for port in stack.ports.values():
            response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
            assert response.status_code == 200, response.text
        book = _book(stack, "US-CPI-2026-12")
        assert book["bids"] == [[41, 50], [40, 120]]
        assert book["asks"] == [[44, 80], [46, 200]]
        engine = "mypyc" if stack.env["ORDERBOOK_ENGINE"] == "mypyc" else "pure Python"
        assert any(line.startswith(f"engine        {engine} (") for line in stack.lines)
        assert any(f"matching engine: {engine} (" in line for line in stack.lines)
        children = stack.descendants()
        assert len(children) >= 4  # three services, PostgreSQL, Chromium under the runner
    finally:
        code = stack.interrupt()
    assert code == 0, "".join(stack.lines[-40:])
    time.sleep(0.5)
    alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"orphans after Ctrl-C: {[p.cmdline() for p in alive]}"

    # The next start reuses the data: same book (recovered from WAL/snapshot), no re-seeding.
    again = Stack(server_tmp_path / "data")
    again.start()
    try:
        assert any("already seeded" in line for line in again.lines)
        book = _book(again, "US-CPI-2026-12")
        assert book["bids"] == [[41, 50], [40, 120]]
        assert book["last_sequence"] == _book(again, "US-CPI-2026-12")["last_sequence"]
    finally:
        assert again.interrupt() == 0
