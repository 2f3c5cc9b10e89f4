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
import functools
import gc
import hashlib
import itertools
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emlib.blobstore import BlobNotFoundError
from emlib.process import die_with_parent
from orderbook_host.engine import Exchange, Outcome
from orderbook_host.engine import commands as cmds
from orderbook_host.engine import events as ev
from orderbook_host.realtime import ChannelLog, RealtimeHub, Sequenced
from orderbook_host.snapshot_store import SnapshotError, SnapshotStore, encode_snapshot
from orderbook_host.wal import WalError, WriteAheadLog

_log = logging.getLogger("orderbook_host.host")
HOST_SNAPSHOT_VERSION = 1

# Fields that identify accounts are private: the public market channel never carries them.
_PRIVATE_FIELDS = ("account", "maker_account", "taker_account", "client_order_id")


# Where each engine event class goes: the market channel only, the market channel and the
# account's (order lifecycle), or the market and both accounts (trade). Any other class goes
# to its account's channel only. `_sequence` follows this table written out; `channels_of`
# reads it plainly (tests and the crash checker compare the two).
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
_NO_MESSAGES: list[Sequenced] = []  # refusals: never appended to


def channels_of(event: ev.Event) -> tuple[str, ...]:
    """Which channels an engine event goes to (`render_event` decides what each may see)."""
    kind = _KINDS.get(type(event), _AGENT)
    e: Any = event
    if kind is _AGENT:
        return (f"agent:{e.account}",)
    market = f"market:{e.symbol}"
    if kind is _MARKET:
        return (market,)
    if kind is _ORDER:
        return (market, f"agent:{e.account}")
    if e.maker_account == e.taker_account:
        return (market, f"agent:{e.taker_account}")
    return (market, f"agent:{e.taker_account}", f"agent:{e.maker_account}")


def render_event(channel: str, body: Any) -> dict[str, Any]:
    """The payload of a stored message as `channel` may see it: the public `market:*`
    channels never carry the fields that identify accounts. (The hub's `Render`.)"""
    if isinstance(body, dict):
        return body  # a payload already (e.g. sequenced by hand)
    payload: dict[str, Any] = body.to_payload()
    if _KINDS.get(type(body)) in (_ORDER, _TRADE) and channel.startswith("market:"):
        for name in _PRIVATE_FIELDS:
            payload.pop(name, None)
    return payload


# Cyclic GC policy of the serving process. The host keeps millions of long-lived, acyclic
# objects (resting orders, journal, buffers); every collection that walks them stops the loop.
# Measured with bench.host_http (orderbook_gc_pause_seconds): thresholds (100_000, 50, 100)
# made collections rare but each young one walked ~100 k objects (up to 250-500 ms: open-loop
# p99 150-270 ms); CPython's defaults with full collections walking the whole post-recovery
# heap paused up to 250 ms. Default thresholds, and freezing what survives each full
# collection, keep every pause under ~25-50 ms (p99 ~7 ms at 1,000 orders/s) at ~15 % of
# in-process throughput (bench.host_durable).
GC_THRESHOLDS = (700, 10, 10)


def tune_gc_for_serving() -> None:
    """Call once the state is recovered, in the serving process only: collect, move everything
    alive into the permanent generation (later collections never walk it), and freeze again
    after every full collection, so a full collection walks only what was promoted since the
    last one. What stays frozen is never collected again: a cycle that dies later (a closed
    connection's objects, say) is leaked, a small price against stopping the order book.
    Not for a process that builds many hosts (the test suite)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if _freeze_after_full_collection not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full_collection)


def _freeze_after_full_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()  # what survived a full collection is alive: out of every later collection's way


def _event_ts_ms(cmd: cmds.Command) -> int:
    return cmd.now_ms if type(cmd) is cmds.ExpireOrders else cmd.ts_ms  # type: ignore[union-attr]


class Applied:
    """What one command did, once durable: the engine's outcome and where it sits in order.
    (A plain slotted class: a frozen dataclass's __init__ cost ~1 us per order.)"""

    __slots__ = ("messages", "outcome", "wal_seq")

    def __init__(self, outcome: Outcome, wal_seq: int | None, messages: list[Sequenced]) -> None:
        self.outcome = outcome
        self.wal_seq = wal_seq
        self.messages = messages  # (channel, sequence_number, ts_ms, event), payloads unbuilt

    def __repr__(self) -> str:
        return f"Applied(outcome={self.outcome!r}, wal_seq={self.wal_seq!r}, messages={self.messages!r})"

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
        journal_size: int = 20_000,
        snapshot_in_child: bool = False,
    ) -> None:
        self.shard_id = shard_id
        self.prune_wal = prune_wal
        self.snapshot_in_child = snapshot_in_child and hasattr(os, "fork")
        self.last_snapshot_pause_s = 0.0  # how long the last snapshot's cut stopped the loop
        # (wal_seq, ts_ms, engine events) of recent commands, for read-model projectors
        self.journal: deque[tuple[int, int, list[ev.Event]]] = deque(maxlen=journal_size)
        self._log_replay: tuple[Exchange, int] = (Exchange(), 0)  # scratch engine, its WAL seq
        self._log_replay_lock = threading.Lock()
        self.wal = wal
        self.snapshots = snapshots
        self.hub = hub
        hub.render = render_event  # the host's messages carry engine events, rendered on read
        self.clock_ms = clock_ms
        self.exchange = Exchange()
        self.applied_seq = 0  # the WAL seq of the last applied command
        self.snapshot_seq = 0  # the WAL seq the newest durable snapshot covers
        # The snapshot recovery started from: the replay buffer holds envelopes after it only.
        self.recovered_snapshot_seq = 0
        # Messages of logged commands not yet durable, in WAL order (published once they are).
        self._outbox: deque[tuple[int, list[Sequenced]]] = deque()
        # The hub's channel logs by symbol and by account (`_sequence`); reset on restore.
        self._market_logs: dict[str, ChannelLog] = {}
        self._agent_logs: dict[str, ChannelLog] = {}
        # `fsync=always`: the commands submitted during this loop iteration wait together.
        self._waiters: list[asyncio.Future[None]] = []
        self._commit_scheduled = False
        self.replayed_records = 0
        self.failed: BaseException | None = None

    # ------------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Newest usable snapshot, then every WAL record after it.

        Each record goes through the live path's own `_sequence`, so sequence numbers, the
        market channels' replay buffers and the journal come out exactly as they were; none
        of it renders a payload or an envelope (messages keep the engine's events), which
        once was 88 % of recovery time.

        The cyclic GC is paused meanwhile and what was built is frozen after: replay allocates
        millions of long-lived objects and each full collection would walk all of them (half the
        replay time at 300 k records).
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
            # What replay built is the long-lived state. Left in the young generation, the first
            # collection after re-enabling would walk all of it (0.3 s per 200 k records), and
            # the older generations again later; freezing moves it out of every collection's way
            # without walking it. (Refcounting still frees any of it that is dropped.)
            gc.freeze()
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
        """Apply every record after the restored state and sequence its messages exactly as the
        live path did (`_sequence`: counters, the market buffers' last entries, the journal)."""
        apply = self.exchange.apply
        decode = cmds.decode_command
        sequence = self._sequence
        # Records older than the journal's window would only pass through it: keeping their
        # events until evicted costs more than freeing them at once (cold memory later).
        journal_from = self.wal.last_seq - (self.journal.maxlen or 0)
        replayed = 0
        for seq, payload in self.wal.replay(self.applied_seq + 1):
            cmd = decode(payload)
            outcome = apply(cmd)
            assert outcome.code is None, f"a logged command was refused on replay (seq {seq}): {outcome.code}"
            # False: the messages were published before the crash
            sequence(seq, _event_ts_ms(cmd), outcome.events, False, seq > journal_from)
            replayed += 1
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

    def _sequence(
        self, seq: int, ts_ms: int, events: list[ev.Event], collect: bool = True, journal: bool = True
    ) -> list[Sequenced]:
        """Give each of a command's messages its channel's next number; return the messages
        (`collect=False`, for WAL replay: number and buffer them, return nothing). `journal`:
        keep the events for `/events` (replay skips records the journal would drop anyway).

        The same routing as `channels_of`, written out: ~6 messages per order made the
        f-string channel names, the hub lookups and the calls per message a third of order
        entry. Channel logs are found by symbol or account in the host's own caches.
        """
        self.applied_seq = seq
        # The journal and the channel buffers keep the engine's (slotted, immutable) events, a
        # fraction of the size of payload dicts; payloads are rendered when someone reads.
        if journal:
            self.journal.append((seq, ts_ms, events))
        markets, agents = self._market_logs, self._agent_logs
        kinds = _KINDS
        agent_buffered = self.hub.private_buffer_size > 0
        out: list[Sequenced] = []
        put = out.append
        for event in events:
            kind = kinds.get(type(event), _AGENT)
            if kind is not _AGENT:
                symbol = event.symbol  # type: ignore[union-attr]
                log = markets.get(symbol) or self._market_log(symbol)
                n = log.last_sequence = log.last_sequence + 1
                log.buffer.append((n, ts_ms, event))
                if collect:
                    put((log.name, n, ts_ms, event))
                if kind is _MARKET:
                    continue
                if kind is _TRADE:
                    taker = event.taker_account  # type: ignore[union-attr]
                    log = agents.get(taker) or self._agent_log(taker)
                    n = log.last_sequence = log.last_sequence + 1
                    if agent_buffered:
                        log.buffer.append((n, ts_ms, event))
                    if collect:
                        put((log.name, n, ts_ms, event))
                    account = event.maker_account  # type: ignore[union-attr]
                    if account == taker:
                        continue
                else:
                    account = event.account  # type: ignore[union-attr]
            else:
                account = event.account  # type: ignore[union-attr]
            log = agents.get(account) or self._agent_log(account)
            n = log.last_sequence = log.last_sequence + 1
            if agent_buffered:
                log.buffer.append((n, ts_ms, event))
            if collect:
                put((log.name, n, ts_ms, event))
        return out

    def _market_log(self, symbol: str) -> ChannelLog:
        log = self._market_logs[symbol] = self._hub_log(f"market:{symbol}")
        return log

    def _agent_log(self, account: str) -> ChannelLog:
        log = self._agent_logs[account] = self._hub_log(f"agent:{account}")
        return log

    def _hub_log(self, channel: str) -> ChannelLog:
        return self.hub.channels.get(channel) or self.hub.channel_log(channel)

    # ------------------------------------------------------------------ live commands

    def next_order_id(self) -> int:
        return self.exchange.next_order_id

    def now_ms(self) -> int:
        return self.clock_ms()

    async def submit(self, cmd: cmds.Command) -> Applied:
        """Apply one command; return once it is durable (or refused, which logs nothing).

        The engine changes no state when it refuses, so applying before the append is safe;
        and since nothing awaits between apply and append, WAL order is apply order. The
        command is encoded before it is applied (orjson refuses ints past 64 bits, which
        every engine bound excludes: such a command is refused, never logged). If
        the append fails the in-memory state is ahead of the log: the host is marked failed
        and must restart (recovery rebuilds it from the log).

        Under `fsync=always` the record is queued (`append_deferred`) and the command waits
        with every other command submitted in the same event-loop iteration: one callback
        per iteration asks the WAL for one write + one fsync covering all of them, then
        publishes their messages and wakes them (group commit without a lock, a heap entry
        or a thread wake-up per command).
        """
        if self.failed is not None:
            raise RuntimeError("the host failed earlier and must restart") from self.failed
        try:
            record: bytes | None = cmds.encode_command(cmd)
        except TypeError:  # an int past 64 bits: out of every engine bound, so refused below
            record = None
        outcome = self.exchange.apply(cmd)
        if outcome.code is not None:
            return Applied(outcome, None, _NO_MESSAGES)
        if record is None:
            self.failed = RuntimeError(f"the engine accepted a command the WAL cannot encode: {cmd!r}")
            raise self.failed
        if not outcome.events and isinstance(cmd, cmds.ExpireOrders):
            return Applied(outcome, None, _NO_MESSAGES)  # the periodic sweep found nothing due: log nothing
        wal = self.wal
        always = wal.fsync_policy == "always"
        try:
            seq = wal.append_deferred(record) if always else wal.append(record)
        except BaseException as exc:
            self.failed = exc
            raise
        messages = self._sequence(seq, _event_ts_ms(cmd), outcome.events)
        if not always:
            if self.hub.subscribers:
                self.hub.publish_sequenced(messages)  # in the OS already; nothing waits for a sync
            return Applied(outcome, seq, messages)
        self._outbox.append((seq, messages))
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)
        # A cancelled caller (client timeout) cancels only its own waiter: the group's
        # commit still publishes its messages in order.
        await waiter
        return Applied(outcome, seq, messages)

    def _commit(self) -> None:
        """Once per loop iteration: make everything appended so far durable, then publish and
        wake the commands that wait for it."""
        self._commit_scheduled = False
        waiters, self._waiters = self._waiters, []
        try:
            durable = self.wal.durable_future(self.wal.last_seq)
        except WalError as exc:
            self._committed(waiters, exc)
            return
        if durable is None:
            self._committed(waiters, None)
        else:
            durable.add_done_callback(functools.partial(self._on_durable, waiters))

    def _on_durable(self, waiters: list[asyncio.Future[None]], durable: asyncio.Future[None]) -> None:
        self._committed(waiters, None if durable.cancelled() else durable.exception())

    def _committed(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        if error is not None:
            self.failed = error  # applied in memory but never durable: the state is ahead of the log
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        self._drain_outbox()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _drain_outbox(self) -> None:
        durable = self.wal.durable_seq
        outbox = self._outbox
        if not self.hub.subscribers:  # nobody to publish to: drop the durable entries
            while outbox and outbox[0][0] <= durable:
                outbox.popleft()
            return
        publish = self.hub.publish_sequenced
        while outbox and outbox[0][0] <= durable:
            publish(outbox.popleft()[1])

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
        self._market_logs.clear()
        self._agent_logs.clear()

    async def take_snapshot(self) -> int | None:
        """Snapshot the state at the current WAL position once that position is durable.

        The cut is taken between two commands on the loop thread. With `snapshot_in_child`
        the process forks there and the child encodes its copy-on-write image of the state
        while the loop goes on serving (encoding walks every resting order: ~0.65 s of
        stalled order entry at 300 k orders when done inline). The write to the object store
        runs in a worker thread. Returns the covered seq.
        """
        seq = self.applied_seq
        if seq == self.snapshot_seq or self.failed is not None:
            return None  # nothing new; or the state may hold a command the log never got
        if self.snapshot_in_child:
            blob = await self._encode_in_child(seq)
        else:
            started = time.perf_counter()
            blob = encode_snapshot(seq, self._encode_state())
            self.last_snapshot_pause_s = time.perf_counter() - started
        await self.wal.wait_durable_async(seq)
        if self.wal.fsync_policy != "always":
            await asyncio.to_thread(self.wal.sync)
        await asyncio.to_thread(self.snapshots.save_encoded, self.shard_id, seq, blob)
        self.snapshot_seq = seq
        await asyncio.to_thread(self._retain, seq)
        return seq

    async def _encode_in_child(self, seq: int) -> bytes:
        """`encode_snapshot(seq, _encode_state())` computed by a forked child into a scratch file
        beside the WAL. (The child also frames and checksums it: every copy of tens of MB made
        on the parent's side holds the GIL, and so stops the loop, for milliseconds.)

        The child runs only pure Python over its copy of the state (no locks other threads
        may hold, no event loop, no object-store client) and leaves with `os._exit`.
        """
        fd, scratch = tempfile.mkstemp(prefix="snapshot-", suffix=".encoding", dir=self.wal.directory)
        try:
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:  # the child
                code = 1
                try:
                    gc.disable()
                    # Hold nothing of the parent's: its WAL lock (flock) must go with the parent
                    # (a restarted host must not find it held), and so must this child.
                    os.closerange(3, fd)
                    os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
                    die_with_parent(signal.SIGKILL)
                    os.nice(19)  # the parent serves orders meanwhile: it gets the CPU first
                    data = memoryview(encode_snapshot(seq, self._encode_state()))
                    while data:
                        data = data[os.write(fd, data) :]
                    code = 0
                finally:
                    os._exit(code)
            self.last_snapshot_pause_s = time.perf_counter() - started  # the loop stood still for the fork
            os.close(fd)
            fd = -1
            # While the child lives, every page the parent writes first is copied (copy-on-write)
            # and a collection writes to every object it walks: no cyclic GC until it is done.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                _, status = await asyncio.to_thread(os.waitpid, pid, 0)
            finally:
                if gc_was_enabled:
                    gc.enable()
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"snapshot child exited with status {os.waitstatus_to_exitcode(status)}")
            return await asyncio.to_thread(Path(scratch).read_bytes)
        finally:
            if fd >= 0:
                os.close(fd)
            Path(scratch).unlink(missing_ok=True)

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
