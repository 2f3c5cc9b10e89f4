"""The host's written-out sequencing (`_sequence`) routes exactly as `channels_of` says, numbers
each channel 1, 2, 3, ... and renders public payloads without account fields."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from emlib.blobstore.local import LocalBlobStore
from orderbook_host.engine import Exchange
from orderbook_host.engine import commands as cmds
from orderbook_host.engine import events as ev
from orderbook_host.host import OrderbookHost, channels_of, render_event
from orderbook_host.realtime import RealtimeHub
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import WriteAheadLog

PRIVATE = {"account", "maker_account", "taker_account", "client_order_id"}


def _commands() -> list[cmds.Command]:
    """Every kind of event: markets, deposits, resting and crossing orders, a cancel, a
    replace, a halt, a resolution (each command accepted; order ids as the engine gives them)."""
    ex = Exchange()
    out: list[cmds.Command] = []

    def run(cmd: cmds.Command) -> None:
        assert ex.apply(cmd).code is None
        out.append(cmd)

    run(cmds.CreateMarket("R-1", "binary", 1))
    for account in ("alice", "bob"):
        run(cmds.Deposit(account, 10**6, 1))
    for index in range(12):
        account = ("alice", "bob")[index % 3 == 0]
        side = ("buy", "sell")[index % 2]
        run(
            cmds.PlaceOrder(
                ex.next_order_id, account, "R-1", side, 1 + index % 3, 2 + index, price=48 + index % 5
            )
        )
    resting = ex.next_order_id
    run(cmds.PlaceOrder(resting, "alice", "R-1", "buy", 5, 30, price=20))
    run(cmds.ReplaceOrder("alice", resting, 3, 40))
    run(cmds.CancelOrder("alice", resting, 41))
    run(cmds.SetMarketStatus("R-1", "halted", 42))
    run(cmds.SetMarketStatus("R-1", "open", 43))
    run(cmds.ResolveMarket("R-1", 100, 44))
    return out


def _events() -> list[list[ev.Event]]:
    ex = Exchange()
    return [ex.apply(cmd).events for cmd in _commands()]


def test_sequence_follows_channels_of_and_numbers_each_channel_from_one(tmp_path: Path) -> None:
    host = OrderbookHost(
        shard_id="r",
        wal=WriteAheadLog.open(tmp_path / "wal"),
        snapshots=SnapshotStore(LocalBlobStore(tmp_path / "objects")),
        hub=RealtimeHub("r", 100),
    )
    try:
        counts: Counter[str] = Counter()
        kinds: set[type] = set()
        for seq, events in enumerate(_events(), start=1):
            messages = host._sequence(seq, 1000 + seq, events)
            expected = [(channel, event) for event in events for channel in channels_of(event)]
            assert [(m[0], m[3]) for m in messages] == expected
            for channel, number, ts_ms, event in messages:
                counts[channel] += 1
                assert number == counts[channel] and ts_ms == 1000 + seq
                kinds.add(type(event))
        assert host.hub.counters() == dict(sorted(counts.items()))
        assert {ev.Trade, ev.OrderAccepted, ev.OrderCancelled, ev.OrderReplaced, ev.BookLevel} <= kinds
        assert {ev.BalanceChanged, ev.PositionChanged, ev.MarketStatusChanged, ev.MarketSettled} <= kinds
    finally:
        host.wal.close()


def test_public_payloads_carry_no_account_fields_and_private_ones_do() -> None:
    for events in _events():
        for event in events:
            full = event.to_payload()
            for channel in channels_of(event):
                payload = render_event(channel, event)
                if channel.startswith("market:"):
                    assert not PRIVATE & payload.keys()
                    assert payload == {k: v for k, v in full.items() if k not in PRIVATE}
                else:
                    assert payload == full
    assert render_event("market:X", {"account": "kept as given"}) == {"account": "kept as given"}


def test_recovery_rebuilds_the_journal_window_and_buffers_as_live(tmp_path: Path) -> None:
    """Replay skips journaling records older than the journal's window; the window, the
    market buffers and the counters still come out as the live host had them."""

    def open_host() -> OrderbookHost:
        host = OrderbookHost(
            shard_id="r",
            wal=WriteAheadLog.open(tmp_path / "wal"),
            snapshots=SnapshotStore(LocalBlobStore(tmp_path / "objects")),
            hub=RealtimeHub("r", 5),
            journal_size=3,
        )
        host.recover()
        return host

    def rendered(host: OrderbookHost) -> tuple[object, object, dict[str, int]]:
        journal = [(seq, ts, [e.to_payload() for e in events]) for seq, ts, events in host.journal]
        buffers = {
            name: [(n, ts, render_event(name, body)) for n, ts, body in log.buffer]
            for name, log in host.hub.channels.items()
        }
        return journal, buffers, host.hub.counters()

    live = open_host()

    async def submit_all() -> None:
        for cmd in _commands():
            assert (await live.submit(cmd)).outcome.code is None

    asyncio.run(submit_all())
    last = live.applied_seq
    assert [seq for seq, _, _ in live.journal] == [last - 2, last - 1, last]
    expected = rendered(live)
    live.wal.close()
    again = open_host()
    assert again.replayed_records == again.applied_seq == last
    assert rendered(again) == expected
    again.wal.close()
