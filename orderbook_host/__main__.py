"""`python -m orderbook_host`: serve this shard on the port of ORDERBOOK_URL."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import uvicorn

from emlib.settings import Settings, get_settings
from orderbook_host import metrics
from orderbook_host.app import build_host, create_app
from orderbook_host.build_info import ENGINE_FILE, engine_build
from orderbook_host.host import OrderbookHost, tune_gc_for_serving


def _build_serving_host(settings: Settings) -> OrderbookHost:
    host = build_host(settings)  # recovers
    tune_gc_for_serving()
    metrics.watch_gc()
    return host


_log = logging.getLogger("orderbook_host")


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    _log.info("matching engine: %s (%s)", engine_build(), ENGINE_FILE)
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
