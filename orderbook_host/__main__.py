"""`python -m orderbook_host`: serve this shard on the port of ORDERBOOK_URL."""

from __future__ import annotations

from urllib.parse import urlsplit

import uvicorn

from emlib.settings import get_settings
from orderbook_host.app import create_app


def main() -> None:
    settings = get_settings()
    url = urlsplit(settings.orderbook_url)
    uvicorn.run(
        create_app(settings),
        host=url.hostname or "127.0.0.1",
        port=url.port or 8101,
        log_level=settings.log_level.lower(),
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
