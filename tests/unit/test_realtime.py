"""Unit tests of the realtime hub: envelopes, per-channel sequence numbers, the replay buffer
and fan-out (no network)."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from orderbook_host.realtime import (
    CHANNELS_PER_CONNECTION_MAX,
    SOURCE_OF_TRUTH,
    SUBSCRIBER_QUEUE_MAX,
    RealtimeHub,
    SequenceTooOldError,
    Subscriber,
    is_private,
    is_valid_channel,
    make_envelope,
    rfc3339_ms,
)

TS_MS = 1_795_000_000_123


def test_envelope_has_the_contract_fields_and_is_deterministic() -> None:
    envelope = make_envelope("market:US-CPI", 7, TS_MS, "host-1", {"type": "trade", "price": 42})
    assert set(envelope) == {
        "channel", "sequence_number", "event_id", "ts", "source_of_truth", "producer", "payload"
    }  # fmt: skip
    assert envelope["channel"] == "market:US-CPI" and envelope["sequence_number"] == 7
    assert envelope["source_of_truth"] == SOURCE_OF_TRUTH == "orderbook_service"
    assert envelope["producer"] == "host-1"
    assert uuid.UUID(envelope["event_id"]).version == 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["ts"])
    # a replay derives the same envelope byte for byte; another seq or channel another id
    assert make_envelope("market:US-CPI", 7, TS_MS, "host-1", {"type": "trade", "price": 42}) == envelope
    assert make_envelope("market:US-CPI", 8, TS_MS, "host-1", {})["event_id"] != envelope["event_id"]
    assert make_envelope("market:OTHER", 7, TS_MS, "host-1", {})["event_id"] != envelope["event_id"]


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1_795_000_000_123, "2026-11-18T11:06:40.123Z"),
    ],
)
def test_rfc3339_ms(ts_ms: int, text: str) -> None:
    assert rfc3339_ms(ts_ms) == text


def test_sequence_numbers_start_at_one_and_rise_by_one_per_channel() -> None:
    hub = RealtimeHub("host-1", buffer_size=100)
    a = [hub.sequence("market:A", TS_MS, {"n": i})["sequence_number"] for i in range(5)]
    b = [hub.sequence("market:B", TS_MS, {"n": i})["sequence_number"] for i in range(3)]
    assert a == [1, 2, 3, 4, 5] and b == [1, 2, 3]
    assert hub.last_sequence("market:A") == 5 and hub.last_sequence("market:C") == 0
    assert hub.counters() == {"market:A": 5, "market:B": 3}


def test_since_returns_exactly_the_envelopes_after_n() -> None:
    hub = RealtimeHub("host-1", buffer_size=100)
    sent = [hub.sequence("market:A", TS_MS, {"n": i}) for i in range(10)]
    for after in range(11):
        assert hub.since("market:A", after) == sent[after:]
    assert hub.since("market:A", 50) == []  # ahead of the channel: nothing to send
    assert hub.since("market:NEW", 0) == []


def test_since_beyond_the_buffer_is_too_old() -> None:
    hub = RealtimeHub("host-1", buffer_size=4)
    sent = [hub.sequence("market:A", TS_MS, {"n": i}) for i in range(10)]  # keeps 7..10
    assert hub.since("market:A", 6) == sent[6:]
    assert [e["sequence_number"] for e in hub.since("market:A", 8)] == [9, 10]
    for after in (0, 1, 5):
        with pytest.raises(SequenceTooOldError):
            hub.since("market:A", after)
    with pytest.raises(SequenceTooOldError):
        hub.since("market:UNKNOWN", 3)


def test_restored_counters_continue_the_numbering_and_refuse_older_replays() -> None:
    hub = RealtimeHub("host-1", buffer_size=10)
    for i in range(5):
        hub.sequence("market:A", TS_MS, {"n": i})
    restored = RealtimeHub("host-1", buffer_size=10)
    restored.restore_counters(hub.counters())
    assert restored.counters() == {"market:A": 5}
    assert restored.since("market:A", 5) == []
    with pytest.raises(SequenceTooOldError):  # the buffer did not survive: resync by snapshot
        restored.since("market:A", 4)
    nxt = restored.sequence("market:A", TS_MS, {"n": 5})
    assert nxt == hub.sequence("market:A", TS_MS, {"n": 5})  # same number, same envelope
    assert restored.since("market:A", 5) == [nxt]


@pytest.mark.parametrize(
    ("channel", "valid"),
    [
        ("market:US-CPI-2026-12", True),
        ("agent:alice_1", True),
        ("news", True),
        ("events", True),
        ("leaderboard", True),
        ("tick", True),
        ("market:", False),
        ("market:a b", False),
        ("market:A/B", False),
        ("orders:A", False),
        ("agent:", False),
        ("", False),
        ("market:" + "A" * 65, False),
        ("news:extra", False),
    ],
)
def test_channel_names(channel: str, valid: bool) -> None:
    assert is_valid_channel(channel) is valid


def test_private_channels_need_permission() -> None:
    hub = RealtimeHub("host-1", buffer_size=10)
    anonymous = Subscriber()
    accepted, rejected = hub.subscribe(anonymous, ["market:A", "agent:alice", "bogus", "news"])
    assert accepted == ["market:A", "news"] and rejected == ["agent:alice", "bogus"]
    alice = Subscriber(allowed_private=frozenset({"agent:alice"}))
    accepted, rejected = hub.subscribe(alice, ["agent:alice", "agent:bob"])
    assert accepted == ["agent:alice"] and rejected == ["agent:bob"]
    assert is_private("agent:alice") and not is_private("market:A")


def test_channel_cap_per_connection() -> None:
    hub = RealtimeHub("host-1", buffer_size=10)
    subscriber = Subscriber()
    names = [f"market:S{i}" for i in range(CHANNELS_PER_CONNECTION_MAX + 3)]
    accepted, rejected = hub.subscribe(subscriber, names)
    assert accepted == names[:CHANNELS_PER_CONNECTION_MAX]
    assert rejected == names[CHANNELS_PER_CONNECTION_MAX:]
    accepted, rejected = hub.subscribe(subscriber, [names[0]])  # already joined: still fine
    assert accepted == [names[0]] and rejected == []


def test_publish_reaches_only_that_channels_subscribers_in_order() -> None:
    hub = RealtimeHub("host-1", buffer_size=10)
    on_a, on_b = Subscriber(), Subscriber()
    hub.subscribe(on_a, ["market:A"])
    hub.subscribe(on_b, ["market:B"])
    envelopes = [hub.sequence(c, TS_MS, {}) for c in ("market:A", "market:B", "market:A")]
    hub.publish(envelopes)
    got_a = [on_a.queue.get_nowait() for _ in range(on_a.queue.qsize())]
    got_b = [on_b.queue.get_nowait() for _ in range(on_b.queue.qsize())]
    assert got_a == [envelopes[0], envelopes[2]] and got_b == [envelopes[1]]
    hub.unsubscribe_all(on_a)
    assert on_a.channels == set() and "market:A" not in hub.subscribers
    hub.publish([hub.sequence("market:A", TS_MS, {})])
    assert on_a.queue.empty()


def test_a_slow_subscriber_is_cut_off_with_a_close_marker() -> None:
    async def scenario() -> None:
        hub = RealtimeHub("host-1", buffer_size=10)
        slow = Subscriber()
        hub.subscribe(slow, ["market:A"])
        for _ in range(SUBSCRIBER_QUEUE_MAX + 5):
            hub.publish([make_envelope("market:A", 1, TS_MS, "h", {})])
        assert slow.overflowed
        items = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert items[-1] is None  # the pump closes the socket; the client resyncs
        assert len(items) == SUBSCRIBER_QUEUE_MAX

    asyncio.run(scenario())
