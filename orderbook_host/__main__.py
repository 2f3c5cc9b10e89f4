"""`python -m orderbook_host`: serve this shard on the port of ORDERBOOK_URL."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import uvicorn

import orderbook_host.engine.exchange as engine_module
from emlib.settings import Settings, get_settings
from orderbook_host import metrics
from orderbook_host.app import build_host, create_app
from orderbook_host.host import OrderbookHost, tune_gc_for_serving


def _build_serving_host(settings: Settings) -> OrderbookHost:
    host = build_host(settings)  # recovers
    tune_gc_for_serving()
    metrics.watch_gc()
    return host


_log = logging.getLogger("orderbook_host")


def engine_build() -> str:
    """Which build of the matching engine this process imported: a mypyc build imports as a
    ``.so`` extension module (``scripts/build_engine.py``), the sources as ``.py``."""
    return "mypyc" if (engine_module.__file__ or "").endswith(".so") else "pure Python"


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    _log.info("matching engine: %s (%s)", engine_build(), engine_module.__file__)
    url = urlsplit(settings.orderbook_url)
    uvicorn.run(
        create_app(settings, host_factory=_build_serving_host),
        host=url.hostname or "127.0.0.1",
        port=url.port or 8101,
        log_level=settings.log_level.lower(),
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
