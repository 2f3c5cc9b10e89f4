"""The orderbook host's HTTP + WebSocket service (one process per shard of symbols).

Every route except `/health`, `/ready`, `/metrics` and `/ws` needs an HMAC signature
(contract.md); `/ws` serves public channels to anyone and a private `agent:{id}` channel
only to a signed service connection or a client holding a channel token for that id.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from emlib.blobstore import open_blob_store
from emlib.channel_tokens import verify_channel_token
from emlib.kv.base import NonceStore
from emlib.kv.memory import MemoryKeyValueStore
from emlib.problems import ProblemError
from emlib.service import create_service_app
from emlib.settings import Settings, get_settings
from emlib.signing import Keyring, VerifiedCaller, verify
from emlib.signing_http import require_signature, verified_or_problem
from orderbook_host import metrics as m
from orderbook_host.engine import codes
from orderbook_host.engine import commands as cmds
from orderbook_host.engine.events import Trade
from orderbook_host.host import Applied, OrderbookHost
from orderbook_host.realtime import RealtimeHub, SequenceTooOldError, Subscriber
from orderbook_host.schemas import (
    ACCOUNT_PATTERN,
    AmountRequest,
    CancelRequest,
    CommandOut,
    CreateMarketRequest,
    MarketStatusRequest,
    NotifyRequest,
    OrderAckOut,
    OrderRequest,
    ReplaceRequest,
    ResolveRequest,
    SnapshotOut,
)
from orderbook_host.snapshot_store import SnapshotStore
from orderbook_host.wal import WriteAheadLog

_log = logging.getLogger("orderbook_host.app")
SERVICE_NAME = "orderbook-host"
EXPIRY_SWEEP_S = 1.0
SNAPSHOT_CHECK_S = 0.5  # how often the snapshot loop looks at the record count

# One place maps engine codes to HTTP statuses (codes.py documents each code).
CODE_STATUS = {
    codes.UNKNOWN_SYMBOL: 404,
    codes.UNKNOWN_ACCOUNT: 404,
    codes.MARKET_EXISTS: 409,
    codes.INVALID_MARKET: 422,
    codes.MARKET_NOT_OPEN: 409,
    codes.INVALID_STATUS_TRANSITION: 409,
    codes.INVALID_PRICE: 422,
    codes.INVALID_QUANTITY: 422,
    codes.INVALID_AMOUNT: 422,
    codes.INVALID_ORDER: 422,
    codes.INVALID_EXPIRY: 422,
    codes.INVALID_ORDER_ID: 409,
    codes.INSUFFICIENT_FUNDS: 422,
    codes.INSUFFICIENT_POSITION: 422,
    codes.POST_ONLY_WOULD_CROSS: 409,
    codes.FOK_NOT_FILLABLE: 409,
    codes.ORDER_NOT_OPEN: 409,
    codes.NOT_OWNER: 403,
    codes.INVALID_MESSAGE: 422,
}


def refused(code: str, detail: str = "", **extra: Any) -> ProblemError:
    return ProblemError(CODE_STATUS.get(code, 422), code, detail or code.replace("_", " "), extra=extra)


def build_host(settings: Settings) -> OrderbookHost:
    wal = WriteAheadLog.open(
        settings.orderbook_wal_dir,
        fsync_policy=settings.fsync_policy,
        segment_bytes=settings.wal_segment_bytes,
        every_n=settings.fsync_every_n,
        interval_ms=settings.fsync_interval_ms,
        on_fsync=m.FSYNC_SECONDS.observe,
    )
    snapshots = SnapshotStore(open_blob_store(settings.object_store))
    hub = RealtimeHub(settings.orderbook_shard_id, settings.replay_buffer_size)
    host = OrderbookHost(
        shard_id=settings.orderbook_shard_id,
        wal=wal,
        snapshots=snapshots,
        hub=hub,
        prune_wal=settings.wal_prune,
        journal_size=settings.journal_size,
        snapshot_in_child=settings.snapshot_in_child,
    )
    host.recover()
    # The recovered state (books, accounts, journal) lives as long as the process: move it out
    # of the cyclic GC's generations so full collections during trading do not walk it again.
    gc.freeze()
    return host


def create_app(
    settings: Settings | None = None,
    host_factory: Callable[[Settings], OrderbookHost] = build_host,
    *,
    lean_order_route: bool = True,
) -> FastAPI:
    """The host's app. `lean_order_route=False` serves `POST /order` through FastAPI alone
    (the reference the lean route is compared with in tests)."""
    settings = settings or get_settings()
    keyring = Keyring(settings.hmac_keys)
    nonces = NonceStore(MemoryKeyValueStore())
    state: dict[str, OrderbookHost] = {}

    def get_host() -> OrderbookHost:
        host = state.get("host")
        if host is None:
            raise ProblemError(503, "not_ready", "the host is recovering")
        return host

    def ready_host() -> None:
        host = get_host()
        if host.failed is not None:
            raise RuntimeError(f"host failed: {host.failed!r}")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        host = await asyncio.to_thread(host_factory, settings)
        state["host"] = host
        tasks = [
            asyncio.create_task(
                _snapshot_loop(host, settings.snapshot_interval_s, settings.snapshot_every_records)
            ),
            asyncio.create_task(_expiry_loop(host)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if host.failed is None:
                with contextlib.suppress(Exception):
                    await host.take_snapshot()
            host.wal.close()

    app = create_service_app(
        SERVICE_NAME,
        settings,
        ready_checks={"engine": ready_host},
        lifespan=lifespan,
        description="Orderbook host: matching, accounts, WAL, realtime (service to service, HMAC-signed)",
    )
    # The nonce store is in memory (never blocks): verify on the loop, not in a worker thread.
    signed = Depends(require_signature(lambda: keyring, nonces, inline=True))

    def check_shard(symbol: str) -> None:
        if not settings.serves_symbol(symbol):
            raise ProblemError(421, "wrong_shard", f"{symbol} is not served by {settings.orderbook_shard_id}")

    async def run(cmd: cmds.Command) -> Applied:
        applied = await get_host().submit(cmd)
        if applied.outcome.code is not None:
            m.REJECTS.labels(code=applied.outcome.code).inc()
        trades = sum(1 for e in applied.outcome.events if isinstance(e, Trade))
        if trades:
            m.TRADES.inc(trades)
        return applied

    # Reads are `async def` on purpose: they then run on the event loop thread, between
    # commands, and see a consistent cut. A plain `def` would run in a worker thread while the
    # loop mutates books and buffers (torn reads, "deque mutated during iteration").

    async def accept_order(body: OrderRequest) -> dict[str, Any]:
        """Place a validated, signed order; the ack in `OrderAckOut`'s field order."""
        check_shard(body.symbol)
        host = get_host()
        cmd = cmds.PlaceOrder(
            server_order_id=host.next_order_id(),
            account=body.account,
            symbol=body.symbol,
            side=body.side,
            quantity=body.quantity,
            ts_ms=host.now_ms(),
            order_type=body.type,
            price=body.price,
            time_in_force=body.time_in_force,
            post_only=body.post_only,
            client_order_id=body.client_order_id,
            expire_at_ms=body.expire_at_ms,
            stp=body.stp,
        )
        m.ORDERS.inc()
        applied = await run(cmd)
        ack = applied.outcome.ack
        assert ack is not None
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, client_order_id=body.client_order_id)
        sequence = applied.channel_sequence(f"market:{body.symbol}") or applied.channel_sequence(
            f"agent:{body.account}"
        )
        return {
            "server_order_id": ack.server_order_id,
            "client_order_id": ack.client_order_id,
            "status": ack.status,
            "filled_quantity": ack.filled_quantity,
            "remaining_quantity": ack.remaining_quantity,
            "fills": [f.to_payload() for f in ack.fills],
            "duplicate": ack.duplicate,
            "sequence_number": sequence,
        }

    @app.post("/order", status_code=201, dependencies=[signed], response_model=OrderAckOut)
    async def place_order(body: OrderRequest) -> OrderAckOut:
        """The reference route (and the OpenAPI entry); `LeanOrderRoute` serves well-formed orders."""
        return OrderAckOut(**await accept_order(body))

    if lean_order_route:
        order_route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == "/order")
        lean = LeanOrderRoute(order_route, keyring, nonces, accept_order)
        app.router.routes.insert(0, Route("/order", lean, methods=["POST"], include_in_schema=False))

    @app.post("/cancel", dependencies=[signed])
    async def cancel_order(body: CancelRequest) -> dict[str, Any]:
        host = get_host()
        order = host.exchange.get_order(body.server_order_id)
        if order is not None:
            check_shard(order["symbol"])
        applied = await run(cmds.CancelOrder(body.account, body.server_order_id, host.now_ms()))
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, server_order_id=body.server_order_id)
        ack = applied.outcome.ack
        return {"wal_seq": applied.wal_seq, **(ack.to_payload() if ack else {})}

    @app.post("/replace", dependencies=[signed])
    async def replace_order(body: ReplaceRequest) -> dict[str, Any]:
        host = get_host()
        cmd = cmds.ReplaceOrder(body.account, body.server_order_id, body.quantity, host.now_ms(), body.price)
        applied = await run(cmd)
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, server_order_id=body.server_order_id)
        ack = applied.outcome.ack
        return {"wal_seq": applied.wal_seq, **(ack.to_payload() if ack else {})}

    @app.get("/snapshot", dependencies=[signed], response_model=SnapshotOut, response_model_exclude_none=True)
    async def snapshot(
        symbol: str = Query(pattern=r"^[A-Z0-9][A-Z0-9-]{0,31}$"),
        since: int | None = Query(None, ge=0),
        depth: int = Query(50, ge=1, le=1000),
    ) -> SnapshotOut:
        check_shard(symbol)
        host = get_host()
        market = host.exchange.market(symbol)
        if market is None:
            raise refused(codes.UNKNOWN_SYMBOL, f"no market {symbol}")
        channel = f"market:{symbol}"
        events = None
        if since is not None:
            try:
                events = host.hub.since(channel, since)
            except SequenceTooOldError as exc:
                raise ProblemError(410, "sequence_too_old", str(exc)) from None
        bids, asks = host.exchange.book_levels(symbol, depth)
        return SnapshotOut(
            symbol=symbol,
            status=market["status"],
            last_sequence=host.hub.last_sequence(channel),
            bids=bids,
            asks=asks,
            last_trade=market["last_trade"],
            market=market,
            events=events,
        )

    @app.post("/markets", status_code=201, dependencies=[signed], response_model=CommandOut)
    async def create_market(body: CreateMarketRequest) -> CommandOut:
        check_shard(body.symbol)
        host = get_host()
        cmd = cmds.CreateMarket(
            body.symbol,
            body.kind,
            host.now_ms(),
            tick_size=body.tick_size,
            price_min=body.price_min,
            price_max=body.price_max,
            multiplier_minor=body.multiplier_minor,
            allow_short=body.allow_short,
            status=body.status,
        )
        applied = await run(cmd)
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, symbol=body.symbol)
        return CommandOut(wal_seq=applied.wal_seq, result=host.exchange.market(body.symbol) or {})

    @app.post("/markets/{symbol}/status", dependencies=[signed], response_model=CommandOut)
    async def set_market_status(symbol: str, body: MarketStatusRequest) -> CommandOut:
        check_shard(symbol)
        host = get_host()
        applied = await run(cmds.SetMarketStatus(symbol, body.status, host.now_ms()))
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, symbol=symbol)
        return CommandOut(wal_seq=applied.wal_seq, result=host.exchange.market(symbol) or {})

    @app.post("/markets/{symbol}/resolve", dependencies=[signed], response_model=CommandOut)
    async def resolve_market(symbol: str, body: ResolveRequest) -> CommandOut:
        check_shard(symbol)
        host = get_host()
        applied = await run(cmds.ResolveMarket(symbol, body.settlement_price, host.now_ms()))
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, symbol=symbol)
        return CommandOut(wal_seq=applied.wal_seq, result=host.exchange.market(symbol) or {})

    @app.post("/accounts/{account}/deposit", dependencies=[signed], response_model=CommandOut)
    async def deposit(account: str, body: AmountRequest) -> CommandOut:
        return await _money(cmds.Deposit, account, body.amount_minor)

    @app.post("/accounts/{account}/withdraw", dependencies=[signed], response_model=CommandOut)
    async def withdraw(account: str, body: AmountRequest) -> CommandOut:
        return await _money(cmds.Withdraw, account, body.amount_minor)

    async def _money(kind: type[cmds.Deposit] | type[cmds.Withdraw], account: str, amount: int) -> CommandOut:
        _check_account(account)
        host = get_host()
        applied = await run(kind(account, amount, host.now_ms()))
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, account=account)
        return CommandOut(wal_seq=applied.wal_seq, result=host.exchange.account(account) or {})

    @app.post("/notify", dependencies=[signed], response_model=CommandOut)
    async def notify(body: NotifyRequest) -> CommandOut:
        """A message on `agent:{account}` (alerts, notices), logged so sequences stay derivable."""
        host = get_host()
        message_json = json.dumps(body.message, separators=(",", ":"), sort_keys=True)
        applied = await run(cmds.Notify(body.account, message_json, host.now_ms()))
        if applied.outcome.code is not None:
            raise refused(applied.outcome.code, account=body.account)
        sequence = applied.channel_sequence(f"agent:{body.account}")
        return CommandOut(wal_seq=applied.wal_seq, result={"sequence_number": sequence})

    @app.get("/accounts/{account}", dependencies=[signed])
    async def get_account(account: str) -> dict[str, Any]:
        _check_account(account)
        host = get_host()
        view = host.exchange.account(account)
        if view is None:
            raise refused(codes.UNKNOWN_ACCOUNT, f"no account {account}")
        return {**view, "open_orders": host.exchange.open_orders(account)}

    @app.get("/debug/state_hash", dependencies=[signed])
    async def state_hash() -> dict[str, Any]:
        """What a recovery must reproduce: the state hash, the WAL position and channel counters.

        Crash tests compare it with an independent replay of the WAL; operators compare two
        replicas or a host before and after a restart.
        """
        host = get_host()
        return {
            "state_hash": host.state_hash(),
            "engine_state_hash": host.exchange.state_hash(),
            "applied_seq": host.applied_seq,
            "wal_last_seq": host.wal.last_seq,
            "snapshot_seq": host.snapshot_seq,
            "recovered_snapshot_seq": host.recovered_snapshot_seq,
            "replayed_records": host.replayed_records,
            "channels": host.hub.counters(),
        }

    @app.get("/events", dependencies=[signed])
    async def events(
        after: int = Query(0, ge=0, description="the last wal_seq the caller has applied"),
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        """Every durable command's events in WAL order, for read-model projectors.

        Recent commands come from memory; older ones are re-derived from the log (410
        `sequence_too_old` only when the log was pruned past `after`).
        """
        host = get_host()
        records = host.journal_after(after, limit)
        if records is None:
            up_to = host.wal.durable_seq
            records = await asyncio.to_thread(host.events_from_log, after, limit, up_to)
            if records is None:
                raise ProblemError(410, "sequence_too_old", f"the log no longer reaches back to {after + 1}")
        last = records[-1]["wal_seq"] if records else after
        return {"records": records, "last_wal_seq": last, "head_wal_seq": host.applied_seq}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        host = state.get("host")
        if host is not None:
            m.update_gauges(host)
        return PlainTextResponse(m.render(), media_type=m.CONTENT_TYPE)

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await _serve_socket(ws, get_host, keyring, nonces, settings)

    return app


class LeanOrderRoute:
    """`POST /order` without FastAPI's per-request machinery, for the common case only.

    FastAPI's route spends more CPU per order (dependency solving, body and response models)
    than the host's own work. This ASGI endpoint takes a request whose target is exactly
    `/order`, whose Content-Type is exactly `application/json` and whose body parses and
    validates as `OrderRequest`; it then verifies the signature with the same `verify` and the
    same 401 problem as `require_signature`, places the order with the same `accept_order`,
    and answers the same JSON bytes. Anything else (malformed, invalid, other media types, a
    query string, an escaped path) goes to the FastAPI route untouched, before any nonce is
    recorded, so every refusal keeps its exact wording. It sits inside the same middleware
    (request id, body limit, problem handlers), so raised `ProblemError`s answer as before.
    """

    def __init__(
        self,
        reference: APIRoute,
        keyring: Keyring,
        nonces: NonceStore,
        accept: Callable[[OrderRequest], Awaitable[dict[str, Any]]],
    ) -> None:
        self.reference = reference
        self.keyring = keyring
        self.nonces = nonces
        self.accept = accept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        order = _well_formed_order(scope, body)
        if order is None:
            _, child_scope = self.reference.matches(scope)
            scope.update(child_scope)
            await self.reference.handle(scope, _replay(body, receive), send)
            return
        # Header names arrive lower-cased; like `verify` over Starlette's headers, the last
        # of a repeated header wins.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        now_s = int(time.time())
        verified_or_problem(verify(self.keyring, "POST", "/order", headers, body, now_s, self.nonces))
        ack = await self.accept(order)
        content = json.dumps(ack, separators=(",", ":"), ensure_ascii=False).encode()
        await Response(content, status_code=201, media_type="application/json")(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _well_formed_order(scope: Scope, body: bytes) -> OrderRequest | None:
    """The order when the lean route may serve it, else None (the FastAPI route answers)."""
    if scope.get("raw_path") != b"/order" or scope.get("query_string"):
        return None
    content_type = next((value for name, value in scope["headers"] if name == b"content-type"), None)
    if content_type != b"application/json":
        return None
    try:
        return OrderRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError, RecursionError):
        return None


def _check_account(account: str) -> None:
    if not re.match(ACCOUNT_PATTERN, account):
        raise ProblemError(422, "validation_error", "invalid account id")


async def _snapshot_loop(host: OrderbookHost, interval_s: float, every_records: int) -> None:
    """A snapshot every `interval_s`, or sooner once `every_records` WAL records came after the
    last one (so a busy host's recovery replays a bounded tail)."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(min(interval_s, SNAPSHOT_CHECK_S))
        if time.monotonic() - last < interval_s and host.applied_seq - host.snapshot_seq < every_records:
            continue
        last = time.monotonic()
        try:
            seq = await host.take_snapshot()
            if seq is not None:
                m.note_snapshot(host.last_snapshot_pause_s)
        except Exception:
            _log.exception("snapshot failed; will retry")


async def _expiry_loop(host: OrderbookHost) -> None:
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_S)
        try:
            await host.submit(cmds.ExpireOrders(host.now_ms()))
        except Exception:
            _log.exception("expiry sweep failed")


async def _serve_socket(
    ws: WebSocket,
    get_host: Callable[[], OrderbookHost],
    keyring: Keyring,
    nonces: NonceStore,
    settings: Settings,
) -> None:
    """`{"op":"subscribe","channels":[...],"token"?}` → `{"op":"subscribed",...}`, then envelopes."""
    host = get_host()
    # A signed upgrade request (a service) may join any channel; others need channel tokens.
    privileged = False
    if ws.headers.get("x-signature"):
        path = ws.scope.get("raw_path", b"/ws").decode() + (
            "?" + ws.scope["query_string"].decode() if ws.scope.get("query_string") else ""
        )
        result = verify(keyring, "GET", path, ws.headers, b"", int(time.time()), nonces)
        if not isinstance(result, VerifiedCaller):
            await ws.close(code=4401)
            return
        privileged = True
    await ws.accept()
    subscriber = Subscriber()
    allowed: set[str] = set()
    sender = asyncio.create_task(_pump(ws, subscriber))
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                break
            message = _parse_json(frame.get("text"))
            if not isinstance(message, dict) or message.get("op") not in ("subscribe", "unsubscribe"):
                await ws.send_json({"op": "error", "code": "bad_message", "detail": "expected op subscribe"})
                continue
            channels = message.get("channels")
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                await ws.send_json(
                    {"op": "error", "code": "bad_message", "detail": "channels must be strings"}
                )
                continue
            token = message.get("token")
            if isinstance(token, str):
                agent = verify_channel_token(keyring, token, int(time.time()))
                if agent is not None:
                    allowed.add(f"agent:{agent}")
            if privileged:
                allowed.update(c for c in channels if c.startswith("agent:"))
            subscriber.allowed_private = frozenset(allowed)
            if message["op"] == "unsubscribe":
                for channel in channels:
                    subscriber.channels.discard(channel)
                    host.hub.subscribers.get(channel, set()).discard(subscriber)
                await ws.send_json({"op": "unsubscribed", "channels": channels})
                continue
            accepted, rejected = host.hub.subscribe(subscriber, channels)
            await ws.send_json(
                {
                    "op": "subscribed",
                    "channels": accepted,
                    "rejected": rejected,
                    "last_sequence": {c: host.hub.last_sequence(c) for c in accepted},
                }
            )
    except WebSocketDisconnect:
        pass
    finally:
        host.hub.unsubscribe_all(subscriber)
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender


def _parse_json(text: str | None) -> Any:
    """A text frame's JSON, or None for a binary frame or malformed JSON (answered bad_message)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


async def _pump(ws: WebSocket, subscriber: Subscriber) -> None:
    while True:
        envelope = await subscriber.queue.get()
        if envelope is None:  # overflowed: the client resyncs from the snapshot endpoint
            await ws.close(code=4008, reason="subscriber queue overflow; resync")
            return
        await ws.send_json(envelope)
