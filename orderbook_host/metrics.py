"""Prometheus metrics of the orderbook host (text format at `GET /metrics`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from orderbook_host.host import OrderbookHost

CONTENT_TYPE = CONTENT_TYPE_LATEST
REGISTRY = CollectorRegistry()

ORDERS = Counter("orderbook_orders_total", "Orders received", registry=REGISTRY)
TRADES = Counter("orderbook_trades_total", "Trades executed", registry=REGISTRY)
REJECTS = Counter("orderbook_rejects_total", "Commands refused by the engine", ["code"], registry=REGISTRY)
SNAPSHOTS = Counter("orderbook_snapshots_total", "Snapshots written", registry=REGISTRY)
FSYNC_SECONDS = Histogram(
    "orderbook_wal_fsync_seconds",
    "WAL fsync latency",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
WAL_BYTES = Gauge(
    "orderbook_wal_bytes_written", "Bytes appended to the WAL by this process", registry=REGISTRY
)
WAL_SEQ = Gauge("orderbook_wal_last_seq", "Last WAL sequence number", registry=REGISTRY)
SNAPSHOT_AGE = Gauge("orderbook_snapshot_age_seconds", "Seconds since the last snapshot", registry=REGISTRY)
_last_snapshot_at = time.monotonic()


def note_snapshot() -> None:
    global _last_snapshot_at
    _last_snapshot_at = time.monotonic()
    SNAPSHOTS.inc()


def update_gauges(host: OrderbookHost) -> None:
    WAL_BYTES.set(host.wal.metrics.bytes_written)
    WAL_SEQ.set(host.wal.last_seq)
    SNAPSHOT_AGE.set(time.monotonic() - _last_snapshot_at)


def render() -> bytes:
    return generate_latest(REGISTRY)
