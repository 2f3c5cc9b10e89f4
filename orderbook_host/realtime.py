"""Sequenced realtime channels: envelopes, per-channel sequence numbers, a bounded replay
buffer, and fan-out to WebSocket subscribers.

Sequence numbers are assigned when the engine's events are applied — during live
operation and identically during WAL replay — so they continue across restarts with no
gap or repeat. Envelopes are derived only from command data (`ts` comes in with the
command; `event_id` is a uuid5 of channel and sequence), so a replayed envelope equals
the original byte for byte. Subscribers only ever see envelopes whose command is durable:
the host queues them and publishes after the WAL's fsync.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SOURCE_OF_TRUTH = "orderbook_service"
_EVENT_NAMESPACE = uuid.UUID("6f1d7c1e-3b1a-4c55-9d7e-2f0d9b8a7c11")
SUBSCRIBER_QUEUE_MAX = 10_000
CHANNELS_PER_CONNECTION_MAX = 64


class SequenceTooOldError(Exception):
    """`since` is older than what the replay buffer keeps (answer 410 sequence_too_old)."""


def rfc3339_ms(ts_ms: int) -> str:
    return (
        datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    )


def make_envelope(
    channel: str, sequence_number: int, ts_ms: int, producer: str, payload: dict[str, Any]
) -> dict[str, Any]:
    return {
        "channel": channel,
        "sequence_number": sequence_number,
        "event_id": str(uuid.uuid5(_EVENT_NAMESPACE, f"{channel}#{sequence_number}")),
        "ts": rfc3339_ms(ts_ms),
        "source_of_truth": SOURCE_OF_TRUTH,
        "producer": producer,
        "payload": payload,
    }


@dataclass
class ChannelLog:
    """One channel's last sequence number and its most recent envelopes."""

    last_sequence: int = 0
    buffer: deque[dict[str, Any]] = field(default_factory=deque)

    def since(self, after: int) -> list[dict[str, Any]]:
        if after >= self.last_sequence:
            return []
        oldest = self.buffer[0]["sequence_number"] if self.buffer else self.last_sequence + 1
        if after + 1 < oldest:
            raise SequenceTooOldError(f"oldest retained sequence is {oldest}")
        return [e for e in self.buffer if e["sequence_number"] > after]


class Subscriber:
    """A connection's outbound queue. A slow consumer that overflows is dropped (it will
    see a gap when it reconnects, and resync from the snapshot endpoint)."""

    def __init__(self, allowed_private: frozenset[str] = frozenset()) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_QUEUE_MAX)
        self.channels: set[str] = set()
        self.allowed_private = allowed_private
        self.overflowed = False

    def offer(self, envelope: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(envelope)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue.get_nowait()  # make room for the close marker
            self.queue.put_nowait(None)


class RealtimeHub:
    def __init__(self, producer: str, buffer_size: int) -> None:
        self.producer = producer
        self.buffer_size = buffer_size
        self.channels: dict[str, ChannelLog] = {}
        self.subscribers: dict[str, set[Subscriber]] = {}

    # -- sequencing (runs on apply, live and in replay) --------------------------------
    def sequence(self, channel: str, ts_ms: int, payload: dict[str, Any]) -> dict[str, Any]:
        log = self.channels.get(channel)
        if log is None:
            log = self.channels[channel] = ChannelLog()
        log.last_sequence += 1
        envelope = make_envelope(channel, log.last_sequence, ts_ms, self.producer, payload)
        log.buffer.append(envelope)
        if len(log.buffer) > self.buffer_size:
            log.buffer.popleft()
        return envelope

    def last_sequence(self, channel: str) -> int:
        log = self.channels.get(channel)
        return log.last_sequence if log else 0

    def since(self, channel: str, after: int) -> list[dict[str, Any]]:
        log = self.channels.get(channel)
        if log is None:
            if after > 0:
                raise SequenceTooOldError("unknown channel")
            return []
        return log.since(after)

    def counters(self) -> dict[str, int]:
        return {name: log.last_sequence for name, log in sorted(self.channels.items())}

    def restore_counters(self, counters: dict[str, int]) -> None:
        self.channels = {name: ChannelLog(last_sequence=seq) for name, seq in counters.items()}

    # -- fan-out (runs after the command is durable) --------------------------------------
    def publish(self, envelopes: Iterable[dict[str, Any]]) -> None:
        for envelope in envelopes:
            for subscriber in self.subscribers.get(envelope["channel"], ()):
                subscriber.offer(envelope)

    def subscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> tuple[list[str], list[str]]:
        accepted: list[str] = []
        rejected: list[str] = []
        for channel in channels:
            if not is_valid_channel(channel) or (
                is_private(channel) and channel not in subscriber.allowed_private
            ):
                rejected.append(channel)
                continue
            if len(subscriber.channels) >= CHANNELS_PER_CONNECTION_MAX and channel not in subscriber.channels:
                rejected.append(channel)
                continue
            subscriber.channels.add(channel)
            self.subscribers.setdefault(channel, set()).add(subscriber)
            accepted.append(channel)
        return accepted, rejected

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        for channel in subscriber.channels:
            members = self.subscribers.get(channel)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self.subscribers[channel]
        subscriber.channels.clear()


_PUBLIC_FIXED = {"news", "events", "leaderboard", "tick"}


def is_private(channel: str) -> bool:
    return channel.startswith("agent:")


def is_valid_channel(channel: str) -> bool:
    if not isinstance(channel, str) or len(channel) > 80:
        return False
    if channel in _PUBLIC_FIXED:
        return True
    prefix, _, rest = channel.partition(":")
    return (
        prefix in ("market", "agent") and 0 < len(rest) <= 64 and all(c.isalnum() or c in "-_" for c in rest)
    )
