"""kill -9 trials against a real orderbook host: every acknowledged command survives, replay
is deterministic, channel sequence numbers continue with no gap or repeat (design §6, 1-3).

One host process (FSYNC_POLICY=always, snapshots every few hundred ms) runs on a temp data
dir. Each trial: a WebSocket subscriber follows the market channels, 8 client threads send a
seeded mix of limit/market orders, cancels and deposits, the host is SIGKILLed at a seeded
random moment, and restarted on the same data. Then, against an independent replay of the
WAL in this process (a fresh `Exchange` + `RealtimeHub` fed every record):

- the host's engine state hash, channel counters and WAL position equal the replay's;
- every acknowledged order is in the log with its account and client_order_id, its fills
  are exactly the acknowledged ones (same trade ids, prices, quantities; no trade id twice)
  and its ack's `sequence_number` points at its `order_accepted` envelope;
- every acknowledged cancel is in the log; re-sending a sample of acknowledged
  client_order_ids returns `duplicate` with the first server_order_id;
- the envelopes the subscriber saw run from `last_sequence + 1` by exactly 1 and equal the
  replay's byte for byte; `GET /snapshot?since=N` after the restart returns exactly the
  envelopes after N, or 410 exactly when they are older than the recovered snapshot.

Problems are collected per trial (not asserted), so `tests/integration/test_host_crash.py`
asserts there are none and this module prints a table:

    .venv/bin/python -m bench.crash --trials 200 [--seed 7] [--clients 8]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from orderbook_host.engine import Exchange, decode_command
from orderbook_host.engine import events as ev
from orderbook_host.host import channels_of, render_event
from orderbook_host.realtime import RealtimeHub
from orderbook_host.wal import WriteAheadLog
from tests.support.host_process import HostProcess

SYMBOLS = ("CR-A", "CR-B", "CR-C")
INITIAL_CASH_MINOR = 1_000_000_000
DUPLICATE_CHECKS_PER_TRIAL = 8


@dataclass
class OrderAck:
    account: str
    symbol: str
    client_order_id: str
    body: dict[str, Any]


@dataclass
class TrialResult:
    trial: int
    kill_after_s: float
    orders_acked: int = 0
    cancels_acked: int = 0
    deposits_acked: int = 0
    fills_acked: int = 0
    envelopes_seen: int = 0
    wal_last_seq: int = 0
    recovered_snapshot_seq: int = 0
    replayed_records: int = 0
    restart_s: float = 0.0
    since_410: int = 0
    problems: list[str] = field(default_factory=list)


class IndependentReplay:
    """The log's meaning computed in this process, record by record, from seq 1."""

    def __init__(self, producer: str) -> None:
        self.exchange = Exchange()
        self.hub = RealtimeHub(producer, buffer_size=1)  # we keep every envelope ourselves
        self.last_seq = 0
        self.envelopes: dict[tuple[str, int], dict[str, Any]] = {}
        self.wal_seq_of: dict[tuple[str, int], int] = {}
        self.accepted: dict[int, tuple[str, str | None]] = {}  # order id -> account, client id
        self.trades: dict[int, ev.Trade] = {}
        self.taker_trades: dict[int, list[int]] = {}
        self.user_cancels: set[int] = set()
        self.duplicates = 0

    def catch_up(self, wal_dir: Path) -> int:
        """Replay records past `last_seq` from a copy of the (live, locked) WAL directory."""
        with tempfile.TemporaryDirectory(prefix="wal-copy-") as tmp:
            copy = Path(tmp) / "wal"
            shutil.copytree(wal_dir, copy, ignore=shutil.ignore_patterns("LOCK"))
            wal = WriteAheadLog.open(copy)
            try:
                count = 0
                for seq, payload in wal.replay(self.last_seq + 1):
                    self.apply(seq, payload)
                    count += 1
                return count
            finally:
                wal.close()

    def apply(self, seq: int, payload: bytes) -> None:
        assert seq == self.last_seq + 1, f"WAL seq {seq} after {self.last_seq}"
        cmd = decode_command(payload)
        outcome = self.exchange.apply(cmd)
        assert outcome.code is None, f"WAL record {seq} refused on replay: {outcome.code}"
        ts_ms = getattr(cmd, "ts_ms", None)
        if ts_ms is None:
            ts_ms = getattr(cmd, "now_ms")  # noqa: B009 - ExpireOrders carries now_ms
        self.last_seq = seq
        for event in outcome.events:
            if isinstance(event, ev.OrderAccepted):
                self.accepted[event.server_order_id] = (event.account, event.client_order_id)
            elif isinstance(event, ev.Trade):
                assert event.trade_id not in self.trades, f"trade id {event.trade_id} twice in replay"
                self.trades[event.trade_id] = event
                self.taker_trades.setdefault(event.taker_order_id, []).append(event.trade_id)
            elif isinstance(event, ev.OrderCancelled) and event.reason == ev.REASON_USER:
                self.user_cancels.add(event.server_order_id)
            elif isinstance(event, ev.OrderDuplicate):
                self.duplicates += 1
            for channel in channels_of(event):
                envelope = self.hub.sequence(channel, ts_ms, render_event(channel, event))
                key = (channel, envelope["sequence_number"])
                if channel.startswith("market:"):
                    self.envelopes[key] = envelope
                self.wal_seq_of[key] = seq

    def filled(self, order_id: int) -> int:
        return sum(
            t.quantity for t in self.trades.values() if order_id in (t.taker_order_id, t.maker_order_id)
        )


class Load:
    """Client threads sending a seeded mix of commands; only acknowledged ones are recorded."""

    def __init__(self, host: HostProcess, trial: int, rng: random.Random, clients: int) -> None:
        self.host = host
        self.trial = trial
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.orders: list[OrderAck] = []
        self.cancels: list[tuple[str, int]] = []
        self.deposits = 0
        self.unexpected: list[str] = []
        self.threads = [
            threading.Thread(target=self._worker, args=(i, random.Random(rng.random())), daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _worker(self, index: int, rng: random.Random) -> None:
        account = f"acct-{index}"
        resting: list[int] = []
        with self.host.client(timeout_s=10.0) as client:
            number = 0
            while not self.stop.is_set():
                number += 1
                try:
                    self._one(client, rng, account, f"t{self.trial}-w{index}-{number}", resting)
                except httpx.TransportError:
                    return  # the host is gone: whatever was not answered was not acknowledged

    def _one(
        self, client: httpx.Client, rng: random.Random, account: str, client_order_id: str, resting: list[int]
    ) -> None:
        roll = rng.random()
        if roll < 0.25 and resting:
            order_id = resting.pop(rng.randrange(len(resting)))
            response = client.post("/cancel", json={"account": account, "server_order_id": order_id})
            if response.status_code == 200:
                with self.lock:
                    self.cancels.append((account, order_id))
            elif response.status_code != 409:  # order_not_open: it traded meanwhile
                self._unexpected(response)
            return
        if roll < 0.30:
            response = client.post(f"/accounts/{account}/deposit", json={"amount_minor": 1000})
            if response.status_code == 200:
                with self.lock:
                    self.deposits += 1
            else:
                self._unexpected(response)
            return
        symbol = rng.choice(SYMBOLS)
        side = rng.choice(("buy", "sell"))
        body: dict[str, Any] = {
            "account": account,
            "symbol": symbol,
            "side": side,
            "quantity": rng.randint(1, 20),
            "client_order_id": client_order_id,
        }
        if roll < 0.45:
            body.update(type="market", time_in_force=rng.choice(("IOC", "FOK")))
        else:
            body["price"] = rng.randint(35, 55) if side == "buy" else rng.randint(45, 65)
            body["time_in_force"] = rng.choices(("GTC", "IOC", "FOK"), (8, 1, 1))[0]
        response = client.post("/order", json=body)
        if response.status_code == 201:
            ack = response.json()
            with self.lock:
                self.orders.append(OrderAck(account, symbol, client_order_id, ack))
            if ack["status"] in ("open", "partially_filled"):
                resting.append(ack["server_order_id"])
        elif response.status_code != 409:  # fok_not_fillable
            self._unexpected(response)

    def _unexpected(self, response: httpx.Response) -> None:
        with self.lock:
            self.unexpected.append(
                f"{response.request.url.path} -> {response.status_code} {response.text[:200]}"
            )


class Subscriber:
    """Follows the market channels over /ws until the connection drops."""

    def __init__(self, host: HostProcess) -> None:
        self.host = host
        self.subscribed_at: dict[str, int] = {}
        self.received: dict[str, list[dict[str, Any]]] = {f"market:{s}": [] for s in SYMBOLS}
        self.ready = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError(f"subscriber not ready: {self.error}")

    def _run(self) -> None:
        import json

        try:
            with connect(self.host.ws_url, open_timeout=10, close_timeout=1) as ws:
                ws.send(json.dumps({"op": "subscribe", "channels": list(self.received)}))
                reply = json.loads(ws.recv(timeout=10))
                self.subscribed_at = {c: int(n) for c, n in reply["last_sequence"].items()}
                self.ready.set()
                while True:
                    envelope = json.loads(ws.recv())
                    self.received[envelope["channel"]].append(envelope)
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            self.error = repr(exc)
            self.ready.set()

    def join(self) -> None:
        self.thread.join(timeout=30)


class CrashRun:
    def __init__(self, data_dir: Path, seed: int, clients: int = 8, snapshot_interval_s: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.clients = clients
        self.host = HostProcess(data_dir, snapshot_interval_s=snapshot_interval_s)
        self.replay = IndependentReplay(self.host.shard_id)
        self.seen_trade_ids: set[int] = set()

    def setup(self) -> None:
        self.host.start()
        with self.host.client() as client:
            for symbol in SYMBOLS:
                client.post("/markets", json={"symbol": symbol, "kind": "binary"}).raise_for_status()
            for index in range(self.clients):
                client.post(
                    f"/accounts/acct-{index}/deposit", json={"amount_minor": INITIAL_CASH_MINOR}
                ).raise_for_status()

    def close(self) -> None:
        self.host.kill()

    def trial(self, number: int, load_s_min: float = 0.2, load_s_max: float = 0.7) -> TrialResult:
        result = TrialResult(number, round(self.rng.uniform(load_s_min, load_s_max), 3))
        subscriber = Subscriber(self.host)
        subscriber.start()
        load = Load(self.host, number, self.rng, self.clients)
        load.start()
        time.sleep(result.kill_after_s)
        self.host.kill()
        load.join()
        subscriber.join()
        started = time.perf_counter()
        self.host.start()
        result.restart_s = time.perf_counter() - started
        result.problems.extend(load.unexpected)
        if subscriber.subscribed_at == {}:
            result.problems.append(f"subscriber never subscribed: {subscriber.error}")
        self._check(result, load, subscriber)
        return result

    def _check(self, result: TrialResult, load: Load, subscriber: Subscriber) -> None:
        problems = result.problems
        state = self.host.state()
        self.replay.catch_up(self.host.wal_dir)
        replay = self.replay
        result.wal_last_seq = state["wal_last_seq"]
        result.recovered_snapshot_seq = state["recovered_snapshot_seq"]
        result.replayed_records = state["replayed_records"]
        # 1. the restarted host equals the independent replay
        if state["engine_state_hash"] != replay.exchange.state_hash():
            problems.append("engine state hash differs from the independent WAL replay")
        if state["channels"] != replay.hub.counters():
            problems.append(
                f"channel counters differ: host {state['channels']} replay {replay.hub.counters()}"
            )
        if state["applied_seq"] != replay.last_seq or state["wal_last_seq"] != replay.last_seq:
            problems.append(f"WAL position: host {state['applied_seq']}, replay {replay.last_seq}")
        # 2. every acknowledged order is in the log with exactly its acknowledged fills
        for order in load.orders:
            ack = order.body
            oid = ack["server_order_id"]
            if ack["duplicate"]:
                problems.append(f"{order.client_order_id} acked as a duplicate of {oid}")
                continue
            if replay.accepted.get(oid) != (order.account, order.client_order_id):
                problems.append(f"acked order {oid} ({order.client_order_id}) is not in the log as accepted")
                continue
            fill_ids = [f["trade_id"] for f in ack["fills"]]
            if sorted(fill_ids) != sorted(replay.taker_trades.get(oid, [])):
                problems.append(f"order {oid}: acked fills {fill_ids}, log {replay.taker_trades.get(oid)}")
            for fill in ack["fills"]:
                trade = replay.trades.get(fill["trade_id"])
                if trade is None or (trade.price, trade.quantity) != (fill["price"], fill["quantity"]):
                    problems.append(f"order {oid}: fill {fill} differs from the log's {trade}")
                if fill["trade_id"] in self.seen_trade_ids:
                    problems.append(f"trade id {fill['trade_id']} acknowledged twice")
                self.seen_trade_ids.add(fill["trade_id"])
            if sum(f["quantity"] for f in ack["fills"]) != ack["filled_quantity"]:
                problems.append(f"order {oid}: filled_quantity {ack['filled_quantity']} != its fills")
            if replay.filled(oid) < ack["filled_quantity"]:
                problems.append(
                    f"order {oid}: log filled {replay.filled(oid)} < acked {ack['filled_quantity']}"
                )
            envelope = replay.envelopes.get((f"market:{order.symbol}", ack["sequence_number"]))
            if envelope is None or envelope["payload"].get("server_order_id") != oid:
                problems.append(
                    f"order {oid}: ack sequence_number {ack['sequence_number']} is not its envelope"
                )
            result.fills_acked += len(ack["fills"])
        for _, order_id in load.cancels:
            if order_id not in replay.user_cancels:
                problems.append(f"acked cancel of {order_id} is not in the log")
        result.orders_acked = len(load.orders)
        result.cancels_acked = len(load.cancels)
        result.deposits_acked = load.deposits
        # 3. what the subscriber saw: +1 steps, equal to the log; then since=N after the restart
        with self.host.client() as client:
            for channel, envelopes in subscriber.received.items():
                last = subscriber.subscribed_at.get(channel, 0)
                for envelope in envelopes:
                    if envelope["sequence_number"] != last + 1:
                        problems.append(f"{channel}: {envelope['sequence_number']} after {last}")
                    elif envelope != replay.envelopes.get((channel, last + 1)):
                        problems.append(f"{channel} #{last + 1} differs from the log's envelope")
                    last = envelope["sequence_number"]
                result.envelopes_seen += len(envelopes)
                self._check_since(result, client, channel, last, state)
            # 4. de-duplication survived the crash
            sample = self.rng.sample(load.orders, min(DUPLICATE_CHECKS_PER_TRIAL, len(load.orders)))
            for order in sample:
                again = client.post(
                    "/order",
                    json={
                        "account": order.account,
                        "symbol": order.symbol,
                        "side": "buy",
                        "price": 1,
                        "quantity": 1,
                        "client_order_id": order.client_order_id,
                    },
                )
                body = again.json()
                if again.status_code != 201 or not body["duplicate"]:
                    problems.append(f"re-sent {order.client_order_id}: {again.status_code} {body}")
                elif body["server_order_id"] != order.body["server_order_id"]:
                    problems.append(f"re-sent {order.client_order_id} got order {body['server_order_id']}")

    def _check_since(
        self, result: TrialResult, client: httpx.Client, channel: str, after: int, state: dict[str, Any]
    ) -> None:
        replay = self.replay
        last = replay.hub.last_sequence(channel)
        response = client.get("/snapshot", params={"symbol": channel.split(":", 1)[1], "since": after})
        # the buffer after a restart holds envelopes of records after the recovered snapshot
        expect_ok = after >= last or replay.wal_seq_of[(channel, after + 1)] > state["recovered_snapshot_seq"]
        if response.status_code == 410 and not expect_ok:
            result.since_410 += 1
            if response.json().get("code") != "sequence_too_old":
                result.problems.append(f"{channel} since={after}: 410 without sequence_too_old")
            return
        if response.status_code != 200 or not expect_ok:
            result.problems.append(
                f"{channel} since={after}: {response.status_code}, expected {200 if expect_ok else 410}"
            )
            return
        body = response.json()
        expected = [replay.envelopes[(channel, n)] for n in range(after + 1, last + 1)]
        if body["last_sequence"] != last or body["events"] != expected:
            result.problems.append(f"{channel} since={after}: events are not exactly {after + 1}..{last}")

    def final_check(self) -> list[str]:
        """A from-scratch replay of the whole log after a clean stop equals the live host."""
        state = self.host.state()
        if self.host.stop() not in (0, -signal.SIGTERM):
            return [f"clean stop failed: {self.host.log_tail()}"]
        fresh = IndependentReplay(self.host.shard_id)
        fresh.catch_up(self.host.wal_dir)
        problems = []
        if (
            fresh.exchange.state_hash() != state["engine_state_hash"]
            or fresh.hub.counters() != state["channels"]
        ):
            problems.append("from-scratch replay differs from the live host after the last trial")
        return problems


def run(
    data_dir: Path, trials: int, seed: int, clients: int = 8, load_s: tuple[float, float] = (0.2, 0.7)
) -> tuple[list[TrialResult], list[str]]:
    """`trials` kill/restart rounds on one data dir; per-trial results and the final check."""
    crash = CrashRun(data_dir, seed, clients)
    crash.setup()
    try:
        results = [crash.trial(n, *load_s) for n in range(1, trials + 1)]
        return results, crash.final_check()
    finally:
        crash.close()


def _table(results: list[TrialResult], final: list[str], elapsed_s: float) -> str:
    def total(name: str) -> int:
        return sum(int(getattr(r, name)) for r in results)

    restarts = [r.restart_s for r in results]
    failed = [r for r in results if r.problems]
    rows = [
        ("trials", len(results)),
        ("trials with a problem", len(failed)),
        ("orders acknowledged", total("orders_acked")),
        ("fills acknowledged", total("fills_acked")),
        ("cancels acknowledged", total("cancels_acked")),
        ("deposits acknowledged", total("deposits_acked")),
        ("envelopes seen on /ws", total("envelopes_seen")),
        ("since=N answered 410 (older than the recovered snapshot)", total("since_410")),
        ("WAL records at the end", results[-1].wal_last_seq if results else 0),
        ("WAL records replayed per restart (median)", statistics.median(r.replayed_records for r in results)),
        ("restart to /ready, median s", round(statistics.median(restarts), 3)),
        ("restart to /ready, max s", round(max(restarts), 3)),
        ("from-scratch replay equals the live host", "yes" if not final else "NO"),
        ("elapsed s", round(elapsed_s, 1)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    for r in failed[:10]:
        lines.append(f"trial {r.trial} (kill after {r.kill_after_s}s): " + "; ".join(r.problems[:5]))
    lines.extend(final)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        results, final = run(Path(tmp) / "data", args.trials, args.seed, args.clients)
    print(_table(results, final, time.perf_counter() - started))
    if final or any(r.problems for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
