"""Runs the whole product on one machine: PostgreSQL, the orderbook host, the Playwright
runner and the functions API, each a child process, plus demo data.

Children die with the supervisor (PR_SET_PDEATHSIG), so neither Ctrl-C nor a killed
supervisor leaves orphans; PostgreSQL is stopped last, and its data folder is reused by
the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from devstack.engine_build import EngineChoice, prepare
from emlib.db.embedded import EmbeddedPostgres
from emlib.db.migrate import migrate
from emlib.process import die_with_parent
from emlib.settings import Settings

_log = logging.getLogger("devstack")
READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 10.0


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment


@dataclass
class Running:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    pump: threading.Thread = field(init=False)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def service_specs(
    settings: Settings, engine: EngineChoice | None = None, env: dict[str, str] | None = None
) -> list[ServiceSpec]:
    py = sys.executable
    ob_host, ob_port = _host_port(settings.orderbook_url)
    pw_host, pw_port = _host_port(settings.playwright_runner_url)
    fn = f"http://{settings.functions_host}:{settings.functions_port}"
    engine = engine or EngineChoice("pure Python", "not asked")
    return [
        ServiceSpec(
            "orderbook-host",
            engine.host_argv(),
            f"http://{ob_host}:{ob_port}/ready",
            engine.host_env(dict(os.environ) if env is None else env),
        ),
        ServiceSpec(
            "playwright-runner", [py, "-m", "playwright_runner"], f"http://{pw_host}:{pw_port}/ready"
        ),
        ServiceSpec(
            "functions",
            [
                py,
                "-m",
                "uvicorn",
                "functions.app:app",
                "--host",
                settings.functions_host,
                "--port",
                str(settings.functions_port),
                "--no-access-log",
            ],
            f"{fn}/ready",
        ),
        # The read-model projector (functions/projector.py): no API of its own, only a tiny
        # /ready that answers 200 once it has read a page from the host into PostgreSQL.
        ServiceSpec(
            "projector",
            [py, "-m", "functions.projector", "run", "--health-port", str(settings.functions_port + 3)],
            f"http://127.0.0.1:{settings.functions_port + 3}/ready",
        ),
    ]


class Supervisor:
    def __init__(self, settings: Settings, *, out: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.out = out
        self.children: list[Running] = []
        self.embedded: EmbeddedPostgres | None = None
        self.stopping = threading.Event()

    def start(self) -> str:
        """Start everything and wait until each /ready answers 200; return the URL to open."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        database_url = self.settings.database_url
        if not database_url:
            self.embedded = EmbeddedPostgres(self.settings.embedded_pg_dir)
            database_url = self.embedded.start()
            self.out(f"postgres      embedded, data in {self.settings.embedded_pg_dir}")
        applied = migrate(database_url)
        self.out(f"migrations    {len(applied)} applied")
        env = dict(os.environ, DATABASE_URL=database_url, DATA_DIR=str(self.settings.data_dir))
        engine = prepare(self.settings.data_dir / "cache" / "engine-mypyc", self.settings.orderbook_engine)
        self.out(f"engine        {engine.build} ({engine.note})")
        for spec in service_specs(self.settings, engine, env):
            process = subprocess.Popen(
                spec.argv,
                env={**env, **spec.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # only calls prctl: safe between fork and exec
            )
            running = Running(spec, process)
            running.pump = threading.Thread(target=self._pump, args=(running,), daemon=True)
            running.pump.start()
            self.children.append(running)
        for running in self.children:
            self._wait_ready(running)
            self.out(f"{running.spec.name:<13} ready  {running.spec.ready_url}")
        from devstack.demo import seed_demo_data

        for line in seed_demo_data(self.settings, database_url):
            self.out(f"demo          {line}")
        return f"http://{self.settings.functions_host}:{self.settings.functions_port}/docs"

    def _pump(self, running: Running) -> None:
        """Prefix each child's output with its name, so one terminal shows all logs."""
        assert running.process.stdout is not None
        for raw in running.process.stdout:
            sys.stdout.write(f"[{running.spec.name}] {raw.decode(errors='replace')}")
            sys.stdout.flush()

    def _wait_ready(self, running: Running) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                raise RuntimeError(f"{running.spec.name} exited with {running.process.returncode}")
            try:
                response = httpx.get(running.spec.ready_url, timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{running.spec.name} not ready after {READY_TIMEOUT_S}s: {last}")

    def wait(self) -> int:
        """Block until a child dies or a stop is asked; return an exit code."""
        while not self.stopping.is_set():
            for running in self.children:
                if running.process.poll() is not None:
                    self.out(f"{running.spec.name} exited with {running.process.returncode}; stopping")
                    return 1
            self.stopping.wait(0.5)
        return 0

    def stop(self) -> None:
        self.stopping.set()
        for running in reversed(self.children):
            if running.process.poll() is None:
                running.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for running in self.children:
            try:
                running.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None


def run(settings: Settings) -> int:
    supervisor = Supervisor(settings)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        url = supervisor.start()
        print(f"\nEverything Market is running. Open {url}\nPress Ctrl-C to stop.\n", flush=True)
        return supervisor.wait()
    except Exception as exc:
        print(f"startup failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        supervisor.stop()
        print("stopped.", flush=True)
