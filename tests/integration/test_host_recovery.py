"""Recovery of the orderbook host from damaged and pruned logs.

- A torn tail (the last record cut mid-way) or a flipped bit in the last record: the real host
  process restarts to the last good record, serves, and its state equals an independent
  replay of the good prefix; a snapshot that covered the lost record is set aside rather than
  loaded, so the next restart agrees too (no crash loop, no stale state).
- Snapshot + WAL tail equals the whole WAL: same state hash and channel counters, with
  retention having deleted old segments (small segments), in process and in a real process
  configured with WAL_SEGMENT_BYTES.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

from bench.crash import IndependentReplay
from emlib.blobstore.local import LocalBlobStore
from orderbook_host.engine import commands as cmds
from orderbook_host.host import OrderbookHost
from orderbook_host.realtime import RealtimeHub
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import HEADER, WriteAheadLog
from tests.support.host_process import HostProcess

SYMBOL = "REC-A"


def _trade(host: HostProcess, orders: int) -> None:
    """A market, two accounts and `orders` alternating orders that rest and trade."""
    with host.client() as client:
        client.post("/markets", json={"symbol": SYMBOL, "kind": "binary"}).raise_for_status()
        for account in ("alice", "bob"):
            client.post(f"/accounts/{account}/deposit", json={"amount_minor": 10**7}).raise_for_status()
        for index in range(orders):
            side, account = ("buy", "alice") if index % 2 else ("sell", "bob")
            body = {
                "account": account,
                "symbol": SYMBOL,
                "side": side,
                "price": 40 + index % 7,
                "quantity": 1 + index % 5,
                "client_order_id": f"o-{index}",
            }
            assert client.post("/order", json=body).status_code == 201


def _last_segment(wal_dir: Path) -> Path:
    return sorted(wal_dir.glob("*.wal"))[-1]


def _record_offsets(segment: Path) -> list[int]:
    data = segment.read_bytes()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER.size + HEADER.unpack_from(data, offset)[0]
    return offsets


def _replay_of(wal_dir: Path, shard_id: str) -> IndependentReplay:
    replay = IndependentReplay(shard_id)
    replay.catch_up(wal_dir)
    return replay


def _assert_equals_replay(host: HostProcess, replay: IndependentReplay) -> None:
    state = host.state()
    assert state["engine_state_hash"] == replay.exchange.state_hash()
    assert state["channels"] == replay.hub.counters()
    assert state["applied_seq"] == state["wal_last_seq"] == replay.last_seq


def test_torn_tail_recovers_to_last_good_record_and_serves(tmp_path: Path) -> None:
    host = HostProcess(tmp_path / "data", snapshot_interval_s=60)
    host.start()
    _trade(host, 20)
    last_seq = host.state()["wal_last_seq"]
    host.kill()
    segment = _last_segment(host.wal_dir)
    with open(segment, "r+b") as handle:
        handle.truncate(segment.stat().st_size - 3)  # the last record loses its last bytes

    host.start()

    good_prefix = _replay_of(host.wal_dir, host.shard_id)
    assert good_prefix.last_seq == last_seq - 1
    _assert_equals_replay(host, good_prefix)
    with host.client() as client:  # it serves: the lost order's client id is free again
        again = client.post(
            "/order",
            json={"account": "alice", "symbol": SYMBOL, "side": "buy", "price": 41, "quantity": 1,
                  "client_order_id": "o-19"},
        )  # fmt: skip
        assert again.status_code == 201 and again.json()["duplicate"] is False
    host.kill()
    host.start()
    _assert_equals_replay(host, _replay_of(host.wal_dir, host.shard_id))
    host.kill()


def test_bit_flip_in_last_record_behind_a_snapshot_recovers_without_crash_loop(tmp_path: Path) -> None:
    host = HostProcess(tmp_path / "data", snapshot_interval_s=60)
    host.start()
    _trade(host, 12)
    last_seq = host.state()["wal_last_seq"]
    assert host.stop() in (0, -signal.SIGTERM)  # the clean stop snapshots at last_seq
    snapshots = SnapshotStore(LocalBlobStore(tmp_path / "data" / "objects"))
    assert snapshots.seqs(host.shard_id)[-1] == last_seq
    segment = _last_segment(host.wal_dir)
    data = bytearray(segment.read_bytes())
    data[_record_offsets(segment)[-1] + HEADER.size + 2] ^= 0x10  # one bit of the payload
    segment.write_bytes(bytes(data))

    host.start()

    state = host.state()
    assert state["wal_last_seq"] == last_seq - 1
    _assert_equals_replay(host, _replay_of(host.wal_dir, host.shard_id))
    assert last_seq not in snapshots.seqs(host.shard_id)  # set aside, never loaded again
    blobs = LocalBlobStore(tmp_path / "data" / "objects")
    assert blobs.list(f"orderbook/{host.shard_id}/quarantine/")
    with host.client() as client:  # a new command takes seq last_seq, with other content
        client.post("/accounts/carol/deposit", json={"amount_minor": 5}).raise_for_status()
    host.kill()
    host.start()
    _assert_equals_replay(host, _replay_of(host.wal_dir, host.shard_id))
    host.kill()


def test_snapshot_ahead_of_a_clean_wal_is_refused(tmp_path: Path) -> None:
    """A snapshot past the end of an undamaged log means the wrong (or a lost) WAL directory:
    the host must not start on it and quietly serve an older state."""
    host = HostProcess(tmp_path / "data", snapshot_interval_s=60)
    host.start()
    _trade(host, 4)
    assert host.stop() in (0, -signal.SIGTERM)
    shutil.rmtree(host.wal_dir)
    try:
        host.start(timeout_s=10)
    except RuntimeError as exc:
        assert "ahead of the WAL" in str(exc)
    else:
        host.kill()
        raise AssertionError("the host started on a WAL behind its snapshot")


async def _drive(host: OrderbookHost, archive: Path, rounds: int) -> None:
    """Commands with a snapshot every round; before each snapshot (which prunes the log) the
    WAL files are copied into `archive`, which so keeps the whole log."""
    now = 1_700_000_000_000
    await host.submit(cmds.CreateMarket(SYMBOL, "binary", now))
    for account in ("alice", "bob", "carol"):
        await host.submit(cmds.Deposit(account, 10**8, now))
    for round_index in range(rounds):
        for index in range(25):
            now += 1
            account = ("alice", "bob", "carol")[index % 3]
            side = "buy" if (index + round_index) % 2 else "sell"
            cmd = cmds.PlaceOrder(
                host.next_order_id(), account, SYMBOL, side, 1 + index % 4, now, price=45 + index % 9
            )
            await host.submit(cmd)
        for segment in host.wal.directory.glob("*.wal"):
            shutil.copy2(segment, archive / segment.name)
        assert await host.take_snapshot() is not None


def _open_host(root: Path, wal_dir: Path, segment_bytes: int) -> OrderbookHost:
    wal = WriteAheadLog.open(wal_dir, segment_bytes=segment_bytes)
    store = SnapshotStore(LocalBlobStore(root / "objects"))
    return OrderbookHost(shard_id="rec-1", wal=wal, snapshots=store, hub=RealtimeHub("rec-1", 1000))


def test_snapshot_plus_tail_equals_whole_wal_after_retention(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    live = _open_host(tmp_path / "live", tmp_path / "wal", segment_bytes=4096)
    live.recover()
    asyncio.run(_drive(live, archive, rounds=8))
    # a tail after the last snapshot
    asyncio.run(live.submit(cmds.Deposit("dave", 7, 1_800_000_000_000)))
    live_hash, live_counters = live.state_hash(), live.hub.counters()
    assert live.wal.first_seq > 1, "retention should have deleted the oldest segments"
    live.wal.close()
    for segment in (tmp_path / "wal").glob("*.wal"):
        shutil.copy2(segment, archive / segment.name)

    from_snapshot = _open_host(tmp_path / "live", tmp_path / "wal", segment_bytes=4096)
    from_snapshot.recover()
    assert 0 < from_snapshot.recovered_snapshot_seq < from_snapshot.applied_seq  # snapshot + tail
    from_whole_log = _open_host(tmp_path / "empty", archive, segment_bytes=4096)
    from_whole_log.recover()
    assert from_whole_log.recovered_snapshot_seq == 0
    assert from_whole_log.replayed_records == from_whole_log.applied_seq  # every record from 1

    assert from_snapshot.state_hash() == from_whole_log.state_hash() == live_hash
    assert from_snapshot.hub.counters() == from_whole_log.hub.counters() == live_counters
    from_snapshot.wal.close()
    from_whole_log.wal.close()


def test_real_host_with_small_segments_prunes_and_recovers(tmp_path: Path) -> None:
    host = HostProcess(
        tmp_path / "data", snapshot_interval_s=0.2, wal_segment_bytes=4096, extra_env={"WAL_PRUNE": "true"}
    )
    host.start()
    _trade(host, 120)
    # Two snapshots past the trading must exist before retention can drop the first segments
    # (it keeps the log after the older of the two kept snapshots): deposit, wait, repeat.
    with host.client() as client:
        for _ in range(4):
            client.post("/accounts/erin/deposit", json={"amount_minor": 3}).raise_for_status()
            for _ in range(200):
                state = host.state()
                if state["snapshot_seq"] == state["wal_last_seq"]:
                    break
                asyncio.run(asyncio.sleep(0.05))
            if int(sorted(host.wal_dir.glob("*.wal"))[0].name.split(".")[0]) > 1:
                break
        # and one command after the last snapshot, so recovery replays a tail
        client.post("/accounts/erin/deposit", json={"amount_minor": 3}).raise_for_status()
    before = host.state()
    host.kill()
    first_segment = sorted(host.wal_dir.glob("*.wal"))[0].name
    assert int(first_segment.split(".")[0]) > 1, "no segment was pruned"

    host.start()

    after = host.state()
    # Usually the last deposit is in the tail; a snapshot may race the kill and cover it too.
    assert after["recovered_snapshot_seq"] > 0
    assert after["recovered_snapshot_seq"] + after["replayed_records"] == after["applied_seq"]
    for field in ("state_hash", "engine_state_hash", "channels", "applied_seq"):
        assert after[field] == before[field], field
    host.kill()
