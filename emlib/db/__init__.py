"""PostgreSQL access: a connection pool from settings, migrations, the embedded server."""

from __future__ import annotations

from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

Conn = Connection[TupleRow]


def make_pool(database_url: str, *, max_size: int = 10, name: str = "em") -> ConnectionPool[Conn]:
    """Open a pool and wait until one connection works (fail fast on a bad URL)."""
    pool: ConnectionPool[Conn] = ConnectionPool(
        database_url, min_size=1, max_size=max_size, name=name, open=False, kwargs={"autocommit": False}
    )
    pool.open(wait=True, timeout=15)
    return pool
