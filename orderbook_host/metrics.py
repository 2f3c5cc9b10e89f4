"""Prometheus metrics of the orderbook host (text format at `GET /metrics`)."""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING, Any

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
GC_PAUSE_SECONDS = Histogram(
    "orderbook_gc_pause_seconds",
    "Pauses of the cyclic garbage collector (the event loop stops meanwhile), by generation",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
SNAPSHOT_PAUSE_SECONDS = Histogram(
    "orderbook_snapshot_pause_seconds",
    "How long taking a snapshot's cut stopped the event loop (the fork, or the inline encoding)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
_last_snapshot_at = time.monotonic()
_gc_started_at = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started_at
    if phase == "start":
        _gc_started_at = time.perf_counter()
    else:
        GC_PAUSE_SECONDS.labels(generation=str(info["generation"])).observe(
            time.perf_counter() - _gc_started_at
        )


def watch_gc() -> None:
    """Time every collection into `orderbook_gc_pause_seconds` (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def note_snapshot(pause_s: float) -> None:
    global _last_snapshot_at
    _last_snapshot_at = time.monotonic()
    SNAPSHOTS.inc()
    SNAPSHOT_PAUSE_SECONDS.observe(pause_s)


def update_gauges(host: OrderbookHost) -> None:
    WAL_BYTES.set(host.wal.metrics.bytes_written)
    WAL_SEQ.set(host.wal.last_seq)
    SNAPSHOT_AGE.set(time.monotonic() - _last_snapshot_at)


def render() -> bytes:
    return generate_latest(REGISTRY)
