"""Sequenced realtime channels: envelopes, per-channel sequence numbers, a bounded replay
buffer, and fan-out to WebSocket subscribers.

Sequence numbers are assigned when the engine's events are applied — during live
operation and identically during WAL replay — so they continue across restarts with no
gap or repeat. Envelopes are derived only from command data (`ts` comes in with the
command; `event_id` is a uuid5 of channel and sequence), so a replayed envelope equals
the original byte for byte. Subscribers only ever see envelopes whose command is durable:
the host queues them and publishes after the WAL's fsync.

Envelopes are built lazily. Sequencing stores a compact entry `(sequence_number, ts_ms,
body)`; the payload (`hub.render(channel, body)`) and the envelope dict (uuid5, RFC 3339
string) are made only when a channel has subscribers at publish time or when `since` is
answered. The host's bodies are the engine's own immutable events, shared with its journal,
so a buffered message costs a tuple; building payloads and envelopes per channel per event
up front cost 3-4x the engine's own apply, live and in WAL replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

SOURCE_OF_TRUTH = "orderbook_service"
_EVENT_NAMESPACE = uuid.UUID("6f1d7c1e-3b1a-4c55-9d7e-2f0d9b8a7c11")
_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes
SUBSCRIBER_QUEUE_MAX = 10_000
# Messages kept per `agent:*` channel for replay. None: no endpoint reads them back (`since=`
# serves market channels only; a private client that sees a gap resyncs from the account
# endpoints), and with one channel per account they were most of the host's memory.
PRIVATE_BUFFER_SIZE = 0
CHANNELS_PER_CONNECTION_MAX = 64


class SequenceTooOldError(Exception):
    """`since` is older than what the replay buffer keeps (answer 410 sequence_too_old)."""


def rfc3339_ms(ts_ms: int) -> str:
    return (
        datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    )


# One command's events share a timestamp, and commands arrive with near-equal ones.
_rfc3339_cached = lru_cache(maxsize=4096)(rfc3339_ms)


def event_id(channel: str, sequence_number: int) -> str:
    """`str(uuid.uuid5(namespace, f"{channel}#{sequence_number}"))`, without the UUID object."""
    digest = bytearray(
        hashlib.sha1(
            _NAMESPACE_BYTES + f"{channel}#{sequence_number}".encode(), usedforsecurity=False
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def make_envelope(
    channel: str, sequence_number: int, ts_ms: int, producer: str, payload: dict[str, Any]
) -> dict[str, Any]:
    return {
        "channel": channel,
        "sequence_number": sequence_number,
        "event_id": event_id(channel, sequence_number),
        "ts": _rfc3339_cached(ts_ms),
        "source_of_truth": SOURCE_OF_TRUTH,
        "producer": producer,
        "payload": payload,
    }


Entry = tuple[int, int, Any]
"""What a replay buffer keeps per message: (sequence_number, ts_ms, body)."""

Sequenced = tuple[str, int, int, Any]
"""One message of a command, ready to publish: (channel, sequence_number, ts_ms, body)."""

Render = Callable[[str, Any], dict[str, Any]]
"""Turns a stored body into the payload `channel` may see."""


def payload_as_is(channel: str, body: Any) -> dict[str, Any]:
    """The default `Render`: bodies are payload dicts already."""
    payload: dict[str, Any] = body
    return payload


class ChannelLog:
    """One channel's last sequence number and its most recent entries (bounded)."""

    __slots__ = ("buffer", "last_sequence", "name")

    def __init__(self, buffer_size: int, last_sequence: int = 0, name: str = "") -> None:
        self.name = name
        self.last_sequence = last_sequence
        self.buffer: deque[Entry] = deque(maxlen=buffer_size)

    def since(self, after: int) -> list[Entry]:
        if after >= self.last_sequence:
            return []
        oldest = self.buffer[0][0] if self.buffer else self.last_sequence + 1
        if after + 1 < oldest:
            raise SequenceTooOldError(f"oldest retained sequence is {oldest}")
        return [e for e in self.buffer if e[0] > after]


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
    """Per-channel counters, replay buffers and subscribers.

    `buffer_size` entries are kept per public channel (`market:*`: `since=` reads them);
    `private_buffer_size` (default `PRIVATE_BUFFER_SIZE`, none) per `agent:*` channel, whose
    counters still run so sequence numbers are unchanged.
    """

    def __init__(
        self,
        producer: str,
        buffer_size: int,
        private_buffer_size: int = PRIVATE_BUFFER_SIZE,
        render: Render = payload_as_is,
    ) -> None:
        self.producer = producer
        self.render = render
        self.buffer_size = buffer_size
        self.private_buffer_size = private_buffer_size
        self.channels: dict[str, ChannelLog] = {}
        self.subscribers: dict[str, set[Subscriber]] = {}

    def channel_log(self, channel: str, last_sequence: int = 0) -> ChannelLog:
        """A new channel's log (callers look in `channels` first)."""
        size = self.private_buffer_size if is_private(channel) else self.buffer_size
        log = self.channels[channel] = ChannelLog(size, last_sequence, channel)
        return log

    # -- sequencing (runs on apply, live and in replay) --------------------------------
    def append(self, channel: str, ts_ms: int, body: Any) -> int:
        """Give `body` the channel's next sequence number and keep it in the buffer."""
        log = self.channels.get(channel)
        if log is None:
            log = self.channel_log(channel)
        seq = log.last_sequence = log.last_sequence + 1
        log.buffer.append((seq, ts_ms, body))
        return seq

    def sequence(self, channel: str, ts_ms: int, body: Any) -> dict[str, Any]:
        """`append`, returning the envelope (for callers that want it at once)."""
        seq = self.append(channel, ts_ms, body)
        return make_envelope(channel, seq, ts_ms, self.producer, self.render(channel, body))

    def last_sequence(self, channel: str) -> int:
        log = self.channels.get(channel)
        return log.last_sequence if log else 0

    def since(self, channel: str, after: int) -> list[dict[str, Any]]:
        log = self.channels.get(channel)
        if log is None:
            if after > 0:
                raise SequenceTooOldError("unknown channel")
            return []
        producer, render = self.producer, self.render
        return [
            make_envelope(channel, seq, ts, producer, render(channel, body))
            for seq, ts, body in log.since(after)
        ]

    def counters(self) -> dict[str, int]:
        return {name: log.last_sequence for name, log in sorted(self.channels.items())}

    def restore_counters(self, counters: dict[str, int]) -> None:
        self.channels = {}
        for name, seq in counters.items():
            self.channel_log(name, seq)

    # -- fan-out (runs after the command is durable) --------------------------------------
    def publish(self, envelopes: Iterable[dict[str, Any]]) -> None:
        for envelope in envelopes:
            for subscriber in self.subscribers.get(envelope["channel"], ()):
                subscriber.offer(envelope)

    def publish_sequenced(self, messages: Iterable[Sequenced]) -> None:
        """Send each message to its channel's subscribers; no envelope is built for a channel
        nobody follows."""
        subscribers = self.subscribers
        for channel, seq, ts_ms, body in messages:
            members = subscribers.get(channel)
            if members:
                envelope = make_envelope(channel, seq, ts_ms, self.producer, self.render(channel, body))
                for subscriber in members:
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
