"""`python -m playwright_runner [--host H] [--port P]`: serve the runner with uvicorn.

Host and port default to those in PLAYWRIGHT_RUNNER_URL, which is how other services
reach the runner; in a container that name is not a local address, so the task passes
`--host 0.0.0.0`.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

import uvicorn

from emlib.settings import get_settings
from playwright_runner.app import create_app


def listen_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"PLAYWRIGHT_RUNNER_URL must be http(s)://host[:port], got {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    default_host, default_port = listen_address(settings.playwright_runner_url)
    parser = argparse.ArgumentParser(prog="python -m playwright_runner")
    parser.add_argument("--host", default=default_host)
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
