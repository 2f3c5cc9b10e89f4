"""Snapshots: encoded by a forked child from a copy-on-write image of the cut while the loop
keeps serving; byte-for-byte what an inline encoding gives; a failed child leaves nothing;
taken sooner once SNAPSHOT_EVERY_RECORDS records follow the last one."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import pytest

from emlib.blobstore.local import LocalBlobStore
from orderbook_host.engine import commands as cmds
from orderbook_host.host import OrderbookHost
from orderbook_host.realtime import RealtimeHub
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import WriteAheadLog
from tests.support.host_process import HostProcess

SYMBOL = "SNAP-1"
NOW_MS = 1_800_000_000_000


def _host(root: Path, *, in_child: bool) -> OrderbookHost:
    host = OrderbookHost(
        shard_id="snap",
        wal=WriteAheadLog.open(root / "wal"),
        snapshots=SnapshotStore(LocalBlobStore(root / "objects")),
        hub=RealtimeHub("snap", 100),
        snapshot_in_child=in_child,
    )
    host.recover()
    return host


async def _trade(host: OrderbookHost, orders: int, start: int = 0) -> None:
    if start == 0:
        await host.submit(cmds.CreateMarket(SYMBOL, "binary", NOW_MS))
        for account in ("alice", "bob"):
            await host.submit(cmds.Deposit(account, 10**9, NOW_MS))
    for index in range(start, start + orders):
        side, account = ("buy", "alice") if index % 2 else ("sell", "bob")
        cmd = cmds.PlaceOrder(
            host.next_order_id(), account, SYMBOL, side, 1 + index % 3, NOW_MS + index, price=40 + index % 15
        )
        await host.submit(cmd)


def test_child_snapshot_equals_the_inline_encoding_and_recovers(tmp_path: Path) -> None:
    host = _host(tmp_path, in_child=True)

    async def main() -> tuple[int | None, bytes]:
        await _trade(host, 200)
        expected = host._encode_state()
        return await host.take_snapshot(), expected

    seq, expected = asyncio.run(main())
    assert gc.isenabled()  # paused only while the child ran
    assert seq == host.applied_seq
    assert host.snapshots.load("snap", seq) == expected
    assert not list((tmp_path / "wal").glob("*.encoding"))  # the scratch file is gone
    state_hash = host.state_hash()
    host.wal.close()
    again = _host(tmp_path, in_child=True)
    assert again.recovered_snapshot_seq == seq and again.replayed_records == 0
    assert again.state_hash() == state_hash
    again.wal.close()


def test_the_loop_serves_while_the_child_encodes_and_the_snapshot_is_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _host(tmp_path, in_child=True)
    real_encode = OrderbookHost._encode_state

    def slow_encode(self: OrderbookHost) -> bytes:
        data = real_encode(self)  # the state at the cut (the child's copy)
        time.sleep(1.0)  # runs in the child only: the parent never calls it in this test
        return data

    monkeypatch.setattr(OrderbookHost, "_encode_state", slow_encode)

    async def main() -> tuple[int | None, bytes, bool]:
        await _trade(host, 50)
        at_cut = real_encode(host)
        snapshot = asyncio.create_task(host.take_snapshot())
        await asyncio.sleep(0.05)  # the fork has happened; the child now sleeps in its encoding
        await _trade(host, 20, start=50)  # order entry goes on meanwhile
        served_while_encoding = not snapshot.done()
        return await snapshot, at_cut, served_while_encoding

    seq, at_cut, served_while_encoding = asyncio.run(main())
    assert served_while_encoding
    assert seq is not None and seq < host.applied_seq  # the 20 later orders are not in it
    assert host.snapshots.load("snap", seq) == at_cut
    host.wal.close()


def test_a_failed_child_leaves_no_snapshot_and_the_next_one_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _host(tmp_path, in_child=True)
    real_encode = OrderbookHost._encode_state
    parent = os.getpid()

    def broken_in_child(self: OrderbookHost) -> bytes:
        if os.getpid() != parent:
            raise MemoryError("the child ran out of memory")
        return real_encode(self)

    async def main() -> int | None:
        await _trade(host, 30)
        monkeypatch.setattr(OrderbookHost, "_encode_state", broken_in_child)
        with pytest.raises(RuntimeError, match="snapshot child exited with status 1"):
            await host.take_snapshot()
        assert host.snapshots.seqs("snap") == [] and host.snapshot_seq == 0
        assert not list((tmp_path / "wal").glob("*.encoding"))
        monkeypatch.setattr(OrderbookHost, "_encode_state", real_encode)
        return await host.take_snapshot()

    assert asyncio.run(main()) == host.applied_seq
    assert gc.isenabled()  # also after the failed child
    host.wal.close()


def test_a_snapshot_is_taken_once_enough_records_follow_the_last(tmp_path: Path) -> None:
    process = HostProcess(
        tmp_path / "data", snapshot_interval_s=3600, extra_env={"SNAPSHOT_EVERY_RECORDS": "10"}
    )
    process.start()
    snapshots = tmp_path / "data" / "objects" / "orderbook" / process.shard_id / "snapshots"
    try:
        with process.client() as client:
            client.post("/markets", json={"symbol": SYMBOL, "kind": "binary"}).raise_for_status()
            client.post("/accounts/alice/deposit", json={"amount_minor": 10**7}).raise_for_status()
            for index in range(12):
                body = {
                    "account": "alice",
                    "symbol": SYMBOL,
                    "side": "buy",
                    "price": 10 + index,
                    "quantity": 1,
                }
                assert client.post("/order", json=body).status_code == 201
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not list(snapshots.glob("*.snap")):
            time.sleep(0.1)
        taken = sorted(snapshots.glob("*.snap"))
        assert taken, "no snapshot after 14 records with SNAPSHOT_EVERY_RECORDS=10 (interval 1 h)"
        assert int(taken[-1].stem) >= 10
    finally:
        process.stop()
