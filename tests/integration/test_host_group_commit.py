"""Order entry under fsync=always: commands submitted together share one write and one fsync,
none is answered before its record is synced, and every message is published in WAL order
once durable — also for a caller that gave up (cancelled) while waiting."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from emlib.blobstore.local import LocalBlobStore
from orderbook_host.engine import commands as cmds
from orderbook_host.host import Applied, OrderbookHost
from orderbook_host.realtime import RealtimeHub, Subscriber
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import WriteAheadLog

SYMBOL = "GC-1"
NOW_MS = 1_800_000_000_000


class SlowSync:
    """fdatasync that records the durable seq the log had *before* each sync, and can hold a
    sync until released (to cancel a caller while its record waits)."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, fd: int) -> None:
        self.gate.wait(10)
        os.fdatasync(fd)
        self.calls += 1


def _host(tmp_path: Path, sync: SlowSync) -> OrderbookHost:
    wal = WriteAheadLog.open(tmp_path / "wal", sync_file=sync)
    host = OrderbookHost(
        shard_id="gc",
        wal=wal,
        snapshots=SnapshotStore(LocalBlobStore(tmp_path / "objects")),
        hub=RealtimeHub("gc", 100),
    )
    host.recover()
    return host


def _order(host: OrderbookHost, index: int) -> cmds.PlaceOrder:
    side = "buy" if index % 2 else "sell"
    return cmds.PlaceOrder(
        host.next_order_id(), f"acct-{index % 4}", SYMBOL, side, 1, NOW_MS + index, price=40 + index % 20
    )


async def _setup(host: OrderbookHost) -> None:
    await host.submit(cmds.CreateMarket(SYMBOL, "binary", NOW_MS))
    for index in range(4):
        await host.submit(cmds.Deposit(f"acct-{index}", 10**9, NOW_MS))


def test_concurrent_submits_share_fsyncs_and_are_durable_when_answered(tmp_path: Path) -> None:
    sync = SlowSync()
    host = _host(tmp_path, sync)
    answered_durable: list[bool] = []

    async def submit(index: int) -> int | None:
        applied = await host.submit(_order(host, index))
        answered_durable.append(applied.wal_seq is not None and applied.wal_seq <= host.wal.durable_seq)
        return applied.wal_seq

    async def main() -> list[int | None]:
        await _setup(host)
        before = sync.calls
        seqs = await asyncio.gather(*(submit(index) for index in range(200)))
        assert sync.calls - before <= 5  # 200 commands, a handful of shared fsyncs
        return seqs

    try:
        seqs = asyncio.run(main())
        assert all(answered_durable) and len(answered_durable) == 200
        assert sorted(s for s in seqs if s is not None) == list(range(6, 206))
        assert [seq for seq, _ in host.wal.replay()] == list(range(1, 206))
    finally:
        host.wal.close()


def test_a_cancelled_caller_still_gets_its_messages_published_in_order(tmp_path: Path) -> None:
    sync = SlowSync()
    host = _host(tmp_path, sync)
    subscriber = Subscriber()
    host.hub.subscribe(subscriber, [f"market:{SYMBOL}"])

    async def place(index: int) -> Applied:
        return await host.submit(_order(host, index))  # the order id is taken when it runs

    async def main() -> None:
        await _setup(host)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        sync.gate.clear()  # the next fsync waits
        first = asyncio.create_task(place(1))
        await asyncio.sleep(0.05)
        assert not first.done() and subscriber.queue.empty()  # nothing published before the sync
        first.cancel()  # the only caller of its group gives up while its record waits
        sync.gate.set()
        for _ in range(200):
            if not subscriber.queue.empty():
                break
            await asyncio.sleep(0.01)
        assert first.cancelled()
        assert not subscriber.queue.empty(), "the cancelled caller's messages were never published"
        applied = await place(2)  # a later command: published after the cancelled one's messages
        assert applied.wal_seq is not None and host.wal.durable_seq >= applied.wal_seq

    try:
        asyncio.run(main())
        published = []
        while not subscriber.queue.empty():
            envelope = subscriber.queue.get_nowait()
            assert envelope is not None
            published.append(envelope)
        numbers = [e["sequence_number"] for e in published]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap
        accepted = [
            e["payload"]["server_order_id"] for e in published if e["payload"]["type"] == "order_accepted"
        ]
        assert len(accepted) == 2  # the cancelled caller's order is in the log and was published
        assert all("account" not in e["payload"] for e in published)  # public channel
    finally:
        host.wal.close()


def test_ints_past_64_bits_are_refused_and_log_nothing(tmp_path: Path) -> None:
    host = _host(tmp_path, SlowSync())

    async def main() -> list[str | None]:
        await _setup(host)
        huge = 10**30
        codes = []
        for cmd in (
            cmds.PlaceOrder(host.next_order_id(), "acct-1", SYMBOL, "buy", huge, NOW_MS, price=50),
            cmds.PlaceOrder(host.next_order_id(), "acct-1", SYMBOL, "buy", 1, NOW_MS, price=huge),
            cmds.Deposit("acct-1", huge, NOW_MS),
        ):
            applied = await host.submit(cmd)
            assert applied.wal_seq is None
            codes.append(applied.outcome.code)
        return codes

    try:
        codes = asyncio.run(main())
        assert all(codes), codes  # each refused with its code
        assert host.wal.last_seq == 5 and host.failed is None  # the set-up only
    finally:
        host.wal.close()
