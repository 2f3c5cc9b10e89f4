"""`GET /events`: the host's durable event stream for read-model projectors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.host_process import HostProcess


def _fill(client: httpx.Client) -> None:
    client.post("/markets", json={"symbol": "EVT", "kind": "binary"}).raise_for_status()
    for account in ("alice", "bob"):
        client.post(f"/accounts/{account}/deposit", json={"amount_minor": 10_000}).raise_for_status()
    for n in range(5):
        client.post(
            "/order",
            json={"account": "alice", "symbol": "EVT", "side": "buy", "price": 40 + n, "quantity": 2},
        ).raise_for_status()
    client.post(
        "/order", json={"account": "bob", "symbol": "EVT", "side": "sell", "price": 40, "quantity": 7}
    ).raise_for_status()


def _all(client: httpx.Client, after: int = 0, limit: int = 3) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        page = client.get("/events", params={"after": after, "limit": limit})
        assert page.status_code == 200, page.text
        body = page.json()
        if not body["records"]:
            assert body["last_wal_seq"] == after
            return records
        records.extend(body["records"])
        after = body["last_wal_seq"]


def test_memory_and_log_paths_give_the_same_stream(tmp_path: Path) -> None:
    host = HostProcess(tmp_path / "live", extra_env={"JOURNAL_SIZE": "4"})
    host.start()
    try:
        with host.client() as client:
            _fill(client)
            records = _all(client)
            # wal_seq rises by exactly 1 from the first command, each with its events
            assert [r["wal_seq"] for r in records] == list(range(1, len(records) + 1))
            types = [e["type"] for r in records for e in r["events"]]
            assert types[0] == "market_created" and types.count("trade") == 4
            # the journal keeps 4 commands: older ones were re-derived from the log, equal
            recent = client.get("/events", params={"after": len(records) - 2}).json()["records"]
            assert recent == records[-2:]
            assert client.get("/events", params={"after": 10**6}).json()["records"] == []
        host.stop()
        host.start()  # after a restart the stream is the same, from the log
        with host.client() as client:
            assert _all(client, limit=100) == records
    finally:
        host.stop()


def test_pruned_log_answers_410(tmp_path: Path) -> None:
    host = HostProcess(
        tmp_path / "pruned",
        snapshot_interval_s=0.2,
        wal_segment_bytes=4096,
        extra_env={"JOURNAL_SIZE": "2", "WAL_PRUNE": "true"},
    )
    host.start()
    try:
        with host.client() as client:
            _fill(client)
            # keep writing until snapshots let retention drop the first segment
            for _ in range(400):
                client.post("/accounts/carol/deposit", json={"amount_minor": 1}).raise_for_status()
                if int(sorted(host.wal_dir.glob("*.wal"))[0].name.split(".")[0]) > 1:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("retention never pruned the first segment")
            response = client.get("/events", params={"after": 0})
            assert response.status_code == 410
            assert response.json()["code"] == "sequence_too_old"
    finally:
        host.stop()
