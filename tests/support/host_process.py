"""A real `python -m orderbook_host` process for tests: free port, temp data dir, /ready wait.

Crash tests need the real thing (a separate process that SIGKILL can stop between any two
instructions), not an ASGI app in the test's own event loop. The data dir survives `kill()`
and `stop()`, so `start()` again on the same object is a restart on the same data.

    host = HostProcess(tmp_path / "data", symbols="*", snapshot_interval_s=0.5)
    host.start()
    with host.client() as client:          # httpx.Client signing every request (HMAC)
        client.post("/markets", json={...})
    host.kill()                             # SIGKILL
    host.start()                            # recovery from snapshot + WAL tail
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from emlib.process import die_with_parent
from emlib.settings import HmacKey
from emlib.signing import Keyring
from emlib.signing_http import HmacAuth

ROOT = Path(__file__).resolve().parents[2]
TEST_HMAC_KEY = HmacKey(id="test-key-1", secret="test-secret-0123456789abcdef")


# One TLS context for every client: httpx builds one per Client otherwise (~50 ms of CA
# loading each, seconds when many threads start clients at once). Plain http never uses it.
_SSL_CONTEXT = ssl.create_default_context()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HostProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        symbols: str = "*",
        fsync_policy: str = "always",
        snapshot_interval_s: float = 10.0,
        replay_buffer_size: int = 10_000,
        wal_segment_bytes: int | None = None,
        shard_id: str = "orderbook-test-1",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.shard_id = shard_id
        self.keyring = Keyring([TEST_HMAC_KEY])
        env = {
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": str(data_dir),
            "ORDERBOOK_URL": f"http://127.0.0.1:{self.port}",
            "ORDERBOOK_SHARD_ID": shard_id,
            "ORDERBOOK_SYMBOLS": symbols,
            "FSYNC_POLICY": fsync_policy,
            "SNAPSHOT_INTERVAL_S": str(snapshot_interval_s),
            "REPLAY_BUFFER_SIZE": str(replay_buffer_size),
            "HMAC_KEYS": json.dumps([TEST_HMAC_KEY.model_dump()]),
            # explicit, so a developer's `.env` cannot point the test host at real data
            "OBJECT_STORE_URL": f"file://{data_dir / 'objects'}",
            "WAL_DIR": str(data_dir / "wal" / shard_id),
        }
        if wal_segment_bytes is not None:
            env["WAL_SEGMENT_BYTES"] = str(wal_segment_bytes)
        env.update(extra_env or {})
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-host.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal" / self.shard_id

    def start(self, timeout_s: float = 20.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orderbook_host"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # a killed test run leaves no host behind
            )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, verify=_SSL_CONTEXT) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"host exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    if client.get(f"{self.url}/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"host not ready after {timeout_s}s: {self.log_tail()}")
                time.sleep(0.03)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs (no final snapshot, no WAL close)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM: a clean shutdown (final snapshot, WAL synced and closed).

        Returns the exit status; uvicorn re-raises the signal after a graceful shutdown, so a
        clean stop reads -SIGTERM (or 0).
        """
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.process.returncode

    def auth(self) -> HmacAuth:
        return HmacAuth(TEST_HMAC_KEY.id, TEST_HMAC_KEY.secret)

    def client(self, timeout_s: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth(), timeout=timeout_s, verify=_SSL_CONTEXT)

    def state(self) -> dict[str, Any]:
        with self.client() as client:
            response = client.get("/debug/state_hash")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result
