"""The runner service in a real uvicorn server with real Chromium: health, readiness,
a rendered page from a local web server, and no Chromium left behind after shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uvicorn

from emlib.settings import Settings
from playwright_runner.__main__ import listen_address
from playwright_runner.app import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

PAGE = b"""<!doctype html>
<html><head><title>static title</title></head>
<body><p id="x">hello</p>
<script>document.title = "rendered " + (40 + 2);</script>
</body></html>"""


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/page":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)
        else:
            # Chromium turns an empty 4xx body into a navigation error; real sites send one.
            body = b"<title>not here</title>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces; fields after the last ')' are fixed
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def chromium_descendants(root: int) -> set[int]:
    """Running processes below `root` whose command line names chromium."""
    tree = _children()
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            stack.append(child)
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"chromium" in cmdline and _is_running(child):
                found.add(child)
    return found


def _wait_gone(pids: set[int], timeout_s: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    alive = {p for p in pids if _is_running(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {p for p in alive if _is_running(p)}
    return alive


def _settings(**overrides: object) -> Settings:
    return Settings(app_env="test", chromium_path=CHROMIUM, runner_contexts=2, **overrides)  # type: ignore[arg-type]


def test_service_renders_and_shuts_chromium_down(site: str) -> None:
    before = chromium_descendants(os.getpid())  # others' browsers in this process, if any
    app = create_app(_settings())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "server exited during start-up"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/health").status_code == 200
            ready = client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"browser": "ok"}

            rendered = client.post("/render", json={"url": f"{site}/page"})
            assert rendered.status_code == 200, rendered.text
            body = rendered.json()
            assert body["status"] == 200
            assert body["title"] == "rendered 42"  # the script ran: this is a browser, not a fetch
            assert '<p id="x">hello</p>' in body["html"]

            missing = client.post("/render", json={"url": f"{site}/missing"})
            assert missing.status_code == 200
            assert missing.json()["status"] == 404
            assert missing.json()["title"] == "not here"

            # a closed port: navigation fails, answered as problem+json
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                closed_port = probe.getsockname()[1]
            failed = client.post("/render", json={"url": f"http://127.0.0.1:{closed_port}/"})
            assert failed.status_code == 502
            assert failed.headers["content-type"] == "application/problem+json"
            assert failed.json()["code"] == "render_failed"

            refused = client.post("/render", json={"url": "file:///etc/passwd"})
            assert refused.status_code == 422

        browsers = chromium_descendants(os.getpid()) - before
        assert browsers, "Chromium should run under this process while the server is up"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert not _wait_gone(browsers), "Chromium processes outlived the server"
    assert not chromium_descendants(os.getpid()) - before
    assert not app.state.browser_pool.is_connected()


def test_render_endpoint_absent_in_production() -> None:
    secret = "s" * 40
    settings = Settings(
        app_env="production",
        database_url="postgresql://db.invalid/em",
        jwt_secret=secret,
        audit_hmac_key=secret,
        hmac_keys_json=f'[{{"id": "p1", "secret": "{secret}"}}]',
    )
    app = create_app(settings)
    assert "/render" not in {getattr(r, "path", "") for r in app.routes}
    assert "/ready" in {getattr(r, "path", "") for r in app.routes}


def test_listen_address_parses_runner_url() -> None:
    assert listen_address("http://127.0.0.1:8102") == ("127.0.0.1", 8102)
    assert listen_address("http://runner.em.internal:9000/") == ("runner.em.internal", 9000)
    assert listen_address("https://runner.example") == ("runner.example", 443)
    with pytest.raises(ValueError):
        listen_address("runner:8102")


def test_module_entry_point_serves_and_exits_on_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "APP_ENV": "test",
        "CHROMIUM_PATH": CHROMIUM,
        "RUNNER_CONTEXTS": "1",
        "PLAYWRIGHT_RUNNER_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "playwright_runner"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "runner did not become ready"
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        browsers = chromium_descendants(proc.pid)
        assert browsers
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert not _wait_gone(browsers), "Chromium outlived the runner process"
