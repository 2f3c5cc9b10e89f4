"""The orderbook host's state machine around the pure engine: WAL first, then apply, then
acknowledge once durable; realtime envelopes sequenced on apply and published once durable;
snapshots and recovery.

Order of work for one command (all on the event loop thread, so WAL order = apply order):

1. stamp the command with what the outside decides (server order id, time);
2. apply it to the engine; a refusal (`outcome.code`) changes no state, is not logged and
   gets no sequence number — the caller just hears the code;
3. otherwise append the encoded command to the WAL and sequence its events on channels;
4. await the WAL's fsync of that record (group commit: concurrent commands share one);
5. publish the envelopes (in WAL order, through one outbox) and answer.

A crash between 3 and 4 loses only commands nobody was told about. Recovery loads the newest
valid snapshot (engine state + channel counters, stamped with its WAL position) and replays
the WAL tail through the same apply path, so books, balances and sequence numbers come back
exactly (`state_hash`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emlib.blobstore import BlobNotFoundError
from orderbook_host.engine import Exchange, Outcome
from orderbook_host.engine import commands as cmds
from orderbook_host.engine import events as ev
from orderbook_host.realtime import RealtimeHub, Sequenced, is_private
from orderbook_host.snapshot_store import SnapshotError, SnapshotStore
from orderbook_host.wal import WalError, WriteAheadLog

_log = logging.getLogger("orderbook_host.host")
HOST_SNAPSHOT_VERSION = 1
WAL_SEGMENTS_RETAINED = 2

# Fields that identify accounts are private: the public market channel never carries them.
_PRIVATE_FIELDS = ("account", "maker_account", "taker_account", "client_order_id")


def route(event: ev.Event) -> list[tuple[str, dict[str, Any]]]:
    """Which channels an engine event goes to, with the payload each may see."""
    return route_payload(event, event.to_payload())


def route_payload(event: ev.Event, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """`route` for an event whose `to_payload()` the caller already has (shared with the journal).

    Dispatches on the event's exact class through a dict (an `isinstance` chain against
    unions cost more than the engine's own apply per event); unknown classes go to the
    account's channel.
    """
    return _ROUTES.get(type(event), _to_agent)(event, payload)


Route = list[tuple[str, dict[str, Any]]]


def _public(payload: dict[str, Any]) -> dict[str, Any]:
    public = payload.copy()
    for name in _PRIVATE_FIELDS:
        public.pop(name, None)
    return public


def _to_market(event: Any, payload: dict[str, Any]) -> Route:
    return [(f"market:{event.symbol}", payload)]


def _to_agent(event: Any, payload: dict[str, Any]) -> Route:
    return [(f"agent:{event.account}", payload)]


def _to_market_and_agent(event: Any, payload: dict[str, Any]) -> Route:
    return [(f"market:{event.symbol}", _public(payload)), (f"agent:{event.account}", payload)]


def _trade(event: Any, payload: dict[str, Any]) -> Route:
    out = [(f"market:{event.symbol}", _public(payload)), (f"agent:{event.taker_account}", payload)]
    if event.maker_account != event.taker_account:
        out.append((f"agent:{event.maker_account}", payload))
    return out


# What WAL replay counts per event class (recover): market only, market + account, or trade.
_MARKET, _ORDER, _TRADE, _AGENT = "market", "order", "trade", "agent"
_KINDS: dict[type, str] = {
    ev.MarketCreated: _MARKET,
    ev.MarketStatusChanged: _MARKET,
    ev.MarketSettled: _MARKET,
    ev.BookLevel: _MARKET,
    ev.Trade: _TRADE,
    ev.OrderAccepted: _ORDER,
    ev.OrderCancelled: _ORDER,
    ev.OrderReplaced: _ORDER,
}

_ROUTES: dict[type, Callable[[Any, dict[str, Any]], Route]] = {
    ev.MarketCreated: _to_market,
    ev.MarketStatusChanged: _to_market,
    ev.MarketSettled: _to_market,
    ev.BookLevel: _to_market,
    ev.Trade: _trade,
    ev.OrderAccepted: _to_market_and_agent,
    ev.OrderCancelled: _to_market_and_agent,
    ev.OrderReplaced: _to_market_and_agent,
}


def _event_ts_ms(cmd: cmds.Command) -> int:
    return cmd.now_ms if isinstance(cmd, cmds.ExpireOrders) else cmd.ts_ms


@dataclass(frozen=True)
class Applied:
    """What one command did, once durable: the engine's outcome and where it sits in order."""

    outcome: Outcome
    wal_seq: int | None
    messages: list[Sequenced]  # (channel, sequence_number, ts_ms, payload), envelopes unbuilt

    def channel_sequence(self, channel: str) -> int | None:
        """The sequence number this command's first message got on `channel`."""
        for name, seq, _, _ in self.messages:
            if name == channel:
                return seq
        return None


class OrderbookHost:
    def __init__(
        self,
        *,
        shard_id: str,
        wal: WriteAheadLog,
        snapshots: SnapshotStore,
        hub: RealtimeHub,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        prune_wal: bool = True,
        journal_size: int = 100_000,
    ) -> None:
        self.shard_id = shard_id
        self.prune_wal = prune_wal
        # (wal_seq, ts_ms, engine events) of recent commands, for read-model projectors
        self.journal: deque[tuple[int, int, list[ev.Event]]] = deque(maxlen=journal_size)
        self._log_replay: tuple[Exchange, int] = (Exchange(), 0)  # scratch engine, its WAL seq
        self._log_replay_lock = threading.Lock()
        self.wal = wal
        self.snapshots = snapshots
        self.hub = hub
        self.clock_ms = clock_ms
        self.exchange = Exchange()
        self.applied_seq = 0  # the WAL seq of the last applied command
        self.snapshot_seq = 0  # the WAL seq the newest durable snapshot covers
        # The snapshot recovery started from: the replay buffer holds envelopes after it only.
        self.recovered_snapshot_seq = 0
        self._outbox: deque[tuple[int, list[Sequenced]]] = deque()
        self._background: set[asyncio.Future[None]] = set()
        self.replayed_records = 0
        self.failed: BaseException | None = None

    # ------------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Newest usable snapshot, then every WAL record after it.

        Sequence numbers come out exactly as the live path gave them, but the host does the
        minimum per record: apply it to the engine, count its events per channel, and keep the
        events (engine objects) where something will read them — the journal's last
        `journal_size` records, and each buffered channel's last `buffer_size` messages. Those
        buffered messages are rendered to payloads once at the end. No payload, route or
        envelope per replayed event (that was 88 % of recovery time).

        The cyclic GC is paused meanwhile: replay allocates millions of long-lived objects and
        each full collection would walk all of them (half the replay time at 300 k records).
        """
        restored = self._restore_newest_snapshot()
        if restored is not None:
            self.applied_seq = self.snapshot_seq = self.recovered_snapshot_seq = restored
        start = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            replayed = self._replay_tail()
        finally:
            if gc_was_enabled:
                gc.enable()
        self.replayed_records += replayed
        self._outbox.clear()  # everything replayed was durable and published before the crash
        _log.info(
            "recovered shard %s: snapshot seq %s, %s WAL records replayed in %.3fs, now at seq %s",
            self.shard_id,
            self.snapshot_seq,
            self.replayed_records,
            time.perf_counter() - start,
            self.applied_seq,
        )

    def _replay_tail(self) -> int:
        hub = self.hub
        logs = hub.channels
        # Messages still in a buffer at the end, as (seq, ts_ms, event), by channel; rendered last.
        pending: dict[str, deque[tuple[int, int, ev.Event]]] = {}
        agent_counts: dict[str, int] = {}  # agent channels without a buffer: counters only
        agent_buffered = hub.private_buffer_size > 0

        def keep(name: str, ts_ms: int, event: ev.Event) -> None:
            log = logs.get(name) or hub._new_log(name)
            log.last_sequence += 1
            if log.buffer.maxlen:
                waiting = pending.get(name)
                if waiting is None:
                    waiting = pending[name] = deque(maxlen=log.buffer.maxlen)
                waiting.append((log.last_sequence, ts_ms, event))

        def agent(name: str, ts_ms: int, event: ev.Event) -> None:
            if agent_buffered:
                keep(name, ts_ms, event)
            else:
                agent_counts[name] = agent_counts.get(name, 0) + 1

        apply = self.exchange.apply
        decode = cmds.decode_command
        journal_append = self.journal.append
        kinds = _KINDS
        replayed = 0
        last_seq = self.applied_seq
        for seq, payload in self.wal.replay(self.applied_seq + 1):
            cmd = decode(payload)
            outcome = apply(cmd)
            assert outcome.code is None, f"a logged command was refused on replay (seq {seq}): {outcome.code}"
            replayed += 1
            last_seq = seq
            ts_ms = _event_ts_ms(cmd)
            events = outcome.events
            journal_append((seq, ts_ms, events))
            for event in events:
                kind = kinds.get(type(event), _AGENT)
                if kind is _AGENT:
                    agent(f"agent:{event.account}", ts_ms, event)  # type: ignore[union-attr]
                    continue
                keep(f"market:{event.symbol}", ts_ms, event)  # type: ignore[union-attr]
                if kind is _ORDER:
                    agent(f"agent:{event.account}", ts_ms, event)  # type: ignore[union-attr]
                elif kind is _TRADE:
                    agent(f"agent:{event.taker_account}", ts_ms, event)  # type: ignore[union-attr]
                    if event.maker_account != event.taker_account:  # type: ignore[union-attr]
                        agent(f"agent:{event.maker_account}", ts_ms, event)  # type: ignore[union-attr]
        hub.advance(agent_counts)
        for name, waiting in pending.items():
            private = is_private(name)
            logs[name].buffer.extend(
                (s, ts, e.to_payload() if private else _public(e.to_payload())) for s, ts, e in waiting
            )
        self.applied_seq = last_seq
        return replayed

    def _restore_newest_snapshot(self) -> int | None:
        """Restore the newest snapshot that verifies and that the WAL reaches; return its seq.

        A snapshot ahead of the log means the log lost records the snapshot covers. When the
        WAL's own recovery just cut a torn or corrupt tail, that is the explanation: the
        snapshot describes a history the log no longer has, and keeping it would be wrong
        twice over (new commands reuse those seqs, and a later restart would load it on top
        of them). It is moved to `orderbook/{shard}/quarantine/` and recovery falls back to an
        older one. With a clean log (a lost or foreign WAL directory) we refuse to guess.
        """
        last_seq = self.wal.last_seq
        for wal_seq in reversed(self.snapshots.seqs(self.shard_id)):
            if wal_seq > last_seq:
                if self.wal.recovery.clean:
                    raise RuntimeError(
                        f"snapshot at seq {wal_seq} is ahead of the WAL (last seq {last_seq}) and "
                        "the WAL shows no cut tail: is this the right WAL directory?"
                    )
                self._quarantine_snapshot(wal_seq)
                continue
            try:
                state = self.snapshots.load(self.shard_id, wal_seq)
            except (SnapshotError, BlobNotFoundError) as exc:
                _log.warning("snapshot at seq %s is unusable, trying an older one: %s", wal_seq, exc)
                continue
            self._restore(state)
            return wal_seq
        return None

    def _quarantine_snapshot(self, wal_seq: int) -> None:
        key = self.snapshots.key(self.shard_id, wal_seq)
        blobs = self.snapshots.blobs
        with contextlib.suppress(BlobNotFoundError):
            blobs.put(f"orderbook/{self.shard_id}/quarantine/{wal_seq:020d}.snap", blobs.get(key))
            blobs.delete(key)
        _log.error(
            "snapshot at seq %s is ahead of the WAL (last good seq %s after a cut tail); "
            "moved to quarantine, recovering from an older snapshot",
            wal_seq,
            self.wal.last_seq,
        )

    def _sequence(self, seq: int, ts_ms: int, events: list[ev.Event]) -> list[Sequenced]:
        self.applied_seq = seq
        # The journal keeps the engine's (slotted, immutable) events, a fraction of the size of
        # their payload dicts; `journal_after` renders them when a projector reads.
        self.journal.append((seq, ts_ms, events))
        append = self.hub.append
        return [
            (channel, append(channel, ts_ms, body), ts_ms, body)
            for event in events
            for channel, body in route_payload(event, event.to_payload())
        ]

    # ------------------------------------------------------------------ live commands

    def next_order_id(self) -> int:
        return self.exchange.next_order_id

    def now_ms(self) -> int:
        return self.clock_ms()

    async def submit(self, cmd: cmds.Command) -> Applied:
        """Apply one command; return once it is durable (or refused, which logs nothing).

        The engine changes no state when it refuses, so applying before the append is safe;
        and since nothing awaits between apply and append, WAL order is apply order. If the
        append fails the in-memory state is ahead of the log: the host is marked failed and
        must restart (recovery rebuilds it from the log).
        """
        if self.failed is not None:
            raise RuntimeError("the host failed earlier and must restart") from self.failed
        outcome = self.exchange.apply(cmd)
        if outcome.code is not None:
            return Applied(outcome, None, [])
        if isinstance(cmd, cmds.ExpireOrders) and not outcome.events:
            return Applied(outcome, None, [])  # the periodic sweep found nothing due: log nothing
        try:
            seq = self.wal.append(cmds.encode_command(cmd))
        except BaseException as exc:
            self.failed = exc
            raise
        messages = self._sequence(seq, _event_ts_ms(cmd), outcome.events)
        self._outbox.append((seq, messages))
        if self.wal.fsync_policy != "always":
            self._drain_outbox()
            return Applied(outcome, seq, messages)
        try:
            await self.wal.wait_durable_async(seq)
        except asyncio.CancelledError:
            # The caller went away (client timeout): its messages must not wait in the outbox
            # until some later command happens to drain it. (Rare, so only this path pays for
            # a task; an `asyncio.shield` per submit cost a task for every command.)
            task = asyncio.ensure_future(self._publish_when_durable(seq))
            self._background.add(task)  # a strong reference until it is done
            task.add_done_callback(self._background.discard)
            raise
        except WalError as exc:
            self.failed = exc  # applied in memory but never durable: the state is ahead of the log
            raise
        self._drain_outbox()
        return Applied(outcome, seq, messages)

    async def _publish_when_durable(self, seq: int) -> None:
        try:
            await self.wal.wait_durable_async(seq)
        except WalError as exc:
            self.failed = exc
            raise
        self._drain_outbox()

    def _drain_outbox(self) -> None:
        durable = self.wal.durable_seq if self.wal.fsync_policy == "always" else self.wal.last_seq
        while self._outbox and self._outbox[0][0] <= durable:
            _, messages = self._outbox.popleft()
            self.hub.publish_sequenced(messages)

    # ------------------------------------------------------------------ snapshots

    def _encode_state(self) -> bytes:
        header = json.dumps(
            {"v": HOST_SNAPSHOT_VERSION, "shard": self.shard_id, "channels": self.hub.counters()},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return len(header).to_bytes(4, "little") + header + self.exchange.snapshot()

    def _restore(self, state: bytes) -> None:
        size = int.from_bytes(state[:4], "little")
        header = json.loads(state[4 : 4 + size])
        if header.get("v") != HOST_SNAPSHOT_VERSION:
            raise RuntimeError(f"unknown host snapshot version {header.get('v')!r}")
        self.exchange = Exchange.restore(state[4 + size :])
        self.hub.restore_counters({str(k): int(v) for k, v in header["channels"].items()})

    async def take_snapshot(self) -> int | None:
        """Snapshot the state at the current WAL position once that position is durable.

        The state is encoded on the loop thread (a consistent cut between commands); the
        write to the object store runs in a worker thread. Returns the covered seq.
        """
        seq = self.applied_seq
        if seq == self.snapshot_seq or self.failed is not None:
            return None  # nothing new; or the state may hold a command the log never got
        state = self._encode_state()
        await self.wal.wait_durable_async(seq)
        if self.wal.fsync_policy != "always":
            await asyncio.to_thread(self.wal.sync)
        await asyncio.to_thread(self.snapshots.save, self.shard_id, seq, state)
        self.snapshot_seq = seq
        await asyncio.to_thread(self._retain, seq)
        return seq

    def _retain(self, seq: int) -> None:
        self.snapshots.prune(self.shard_id, keep=2)
        if not self.prune_wal:
            return  # the whole log stays: read models can be rebuilt from seq 1
        oldest = self.snapshots.oldest_seq(self.shard_id)
        if oldest is not None:
            # keep every record after the oldest kept snapshot, so either snapshot can recover
            self.wal.truncate_before(oldest + 1)

    # ------------------------------------------------------------------ event stream

    def journal_after(self, after_seq: int, limit: int) -> list[dict[str, Any]] | None:
        """Durable commands after `after_seq` from memory, or None when memory no longer
        reaches back that far (the caller then reads the log: `events_from_log`)."""
        durable = self.wal.durable_seq if self.wal.fsync_policy == "always" else self.wal.last_seq
        if after_seq >= self.applied_seq:
            return []
        if not self.journal or self.journal[0][0] > after_seq + 1:
            return None
        start = after_seq + 1 - self.journal[0][0]
        out: list[dict[str, Any]] = []
        # islice, not journal[i]: indexing the middle of a deque walks it
        for wal_seq, ts_ms, events in itertools.islice(self.journal, start, None):
            if wal_seq > durable or len(out) >= limit:
                break
            out.append({"wal_seq": wal_seq, "ts_ms": ts_ms, "events": [e.to_payload() for e in events]})
        return out

    def events_from_log(self, after_seq: int, limit: int, up_to_seq: int) -> list[dict[str, Any]] | None:
        """Re-derive events by replaying the WAL in a scratch engine (deterministic, so the
        events equal the originals). None when the log no longer starts at seq 1.

        The scratch engine is kept between calls, so a projector paging forward through old
        history costs one pass over the log, not one pass per page. Blocking: run it in a
        worker thread.
        """
        if self.wal.first_seq != 1:
            return None
        out: list[dict[str, Any]] = []
        with self._log_replay_lock:
            scratch, at = self._log_replay
            if at > after_seq:  # asked to go back: start over
                scratch, at = Exchange(), 0
            for seq, payload in self.wal.replay(at + 1):
                if seq > up_to_seq or len(out) >= limit:
                    break
                cmd = cmds.decode_command(payload)
                outcome = scratch.apply(cmd)
                at = seq
                if seq > after_seq:
                    events = [event.to_payload() for event in outcome.events]
                    out.append({"wal_seq": seq, "ts_ms": _event_ts_ms(cmd), "events": events})
            self._log_replay = (scratch, at)
        return out

    # ------------------------------------------------------------------ inspection

    def state_hash(self) -> str:
        """Engine state + channel counters + WAL position: equal after a faithful recovery."""
        digest = hashlib.sha256()
        digest.update(self.exchange.state_hash().encode())
        digest.update(json.dumps(self.hub.counters(), sort_keys=True).encode())
        digest.update(str(self.applied_seq).encode())
        return digest.hexdigest()
