"""Realtime at a real orderbook host: the /ws subscribe protocol, private `agent:{id}` channels
(channel tokens, signed service connections), envelope fields, +1 sequence numbers, and
`GET /snapshot?since=N` replay (exact, or 410 `sequence_too_old` beyond the buffer)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from emlib.channel_tokens import mint_channel_token
from emlib.signing import Keyring, signed_headers
from tests.support.host_process import TEST_HMAC_KEY, HostProcess

BUFFER = 30
SYMBOL = "RT-A"
ENVELOPE_FIELDS = {"channel", "sequence_number", "event_id", "ts", "source_of_truth", "producer", "payload"}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    process = HostProcess(Path(tmp_path_factory.mktemp("realtime")) / "data", replay_buffer_size=BUFFER)
    process.start()
    with process.client() as client:
        client.post("/markets", json={"symbol": SYMBOL, "kind": "binary"}).raise_for_status()
        for account in ("alice", "bob"):
            client.post(f"/accounts/{account}/deposit", json={"amount_minor": 10**6}).raise_for_status()
    yield process
    process.kill()


def _ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(message))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return reply


def _drain(ws: ClientConnection, quiet_s: float = 0.3) -> list[dict[str, Any]]:
    """Envelopes until none arrives for `quiet_s`."""
    out = []
    while True:
        try:
            out.append(json.loads(ws.recv(timeout=quiet_s)))
        except TimeoutError:
            return out


def _order(host: HostProcess, account: str, side: str, price: int, quantity: int) -> dict[str, Any]:
    with host.client() as client:
        response = client.post(
            "/order",
            json={"account": account, "symbol": SYMBOL, "side": side, "price": price, "quantity": quantity},
        )
        assert response.status_code == 201, response.text
        ack: dict[str, Any] = response.json()
        return ack


def _until(ws: ClientConnection, sequence_number: int) -> list[dict[str, Any]]:
    """Envelopes up to and including `sequence_number` (one channel), waiting up to 10 s."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["sequence_number"] < sequence_number:
        out.append(json.loads(ws.recv(timeout=10)))
    return out


def _last_sequence(host: HostProcess) -> int:
    with host.client() as client:
        return int(client.get("/snapshot", params={"symbol": SYMBOL}).json()["last_sequence"])


def _token(agent: str, now_s: int | None = None, ttl_s: int = 600) -> str:
    return mint_channel_token(
        Keyring([TEST_HMAC_KEY]), agent, int(time.time()) if now_s is None else now_s, ttl_s
    )


def test_subscribe_protocol(host: HostProcess) -> None:
    with connect(host.ws_url) as ws:
        reply = _ask(ws, {"op": "subscribe", "channels": [f"market:{SYMBOL}", "news", "bogus", "market:a b"]})
        assert reply["op"] == "subscribed"
        assert reply["channels"] == [f"market:{SYMBOL}", "news"]
        assert reply["rejected"] == ["bogus", "market:a b"]
        assert reply["last_sequence"][f"market:{SYMBOL}"] >= 1 and reply["last_sequence"]["news"] == 0
        for bad in ({"op": "dance"}, {"channels": ["news"]}, {"op": "subscribe", "channels": "news"},
                    {"op": "subscribe", "channels": [1, 2]}):  # fmt: skip
            answer = _ask(ws, bad)
            assert answer["op"] == "error" and answer["code"] == "bad_message"
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=5))["code"] == "bad_message"
        ws.send(b"\x00\x01")  # a binary frame
        assert json.loads(ws.recv(timeout=5))["code"] == "bad_message"
        assert _ask(ws, {"op": "unsubscribe", "channels": ["news"]}) == {
            "op": "unsubscribed",
            "channels": ["news"],
        }
        # the connection still works after all that
        assert _ask(ws, {"op": "subscribe", "channels": ["tick"]})["channels"] == ["tick"]


def test_private_channel_needs_a_valid_token_for_that_agent(host: HostProcess) -> None:
    now = int(time.time())
    valid = _token("alice")
    expired = _token("alice", now_s=now - 7200, ttl_s=3600)
    forged = valid[:-4] + ("0000" if not valid.endswith("0000") else "1111")
    with connect(host.ws_url) as ws:
        assert _ask(ws, {"op": "subscribe", "channels": ["agent:alice"]})["rejected"] == ["agent:alice"]
        for token in (expired, forged, _token("bob"), "garbage", "a.b.c.d"):
            reply = _ask(ws, {"op": "subscribe", "channels": ["agent:alice"], "token": token})
            assert reply["rejected"] == ["agent:alice"], token
    with connect(host.ws_url) as ws:
        reply = _ask(ws, {"op": "subscribe", "channels": ["agent:alice", "agent:bob"], "token": valid})
        assert reply["channels"] == ["agent:alice"] and reply["rejected"] == ["agent:bob"]
        ack = _order(host, "alice", "buy", 20, 1)
        envelopes = [json.loads(ws.recv(timeout=10))]
        while envelopes[-1]["payload"]["type"] != "order_accepted":
            envelopes.append(json.loads(ws.recv(timeout=10)))
        envelopes += _drain(ws)
        assert envelopes and {e["channel"] for e in envelopes} == {"agent:alice"}
        accepted = [e for e in envelopes if e["payload"]["type"] == "order_accepted"]
        assert accepted[0]["payload"]["server_order_id"] == ack["server_order_id"]
        assert accepted[0]["payload"]["account"] == "alice"  # private payloads keep the account


def _signed_upgrade(path: str = "/ws", secret: str = TEST_HMAC_KEY.secret) -> dict[str, str]:
    return signed_headers(TEST_HMAC_KEY.id, secret, "GET", path, b"", int(time.time()), uuid.uuid4().hex)


def test_signed_service_connection_may_join_any_agent_channel(host: HostProcess) -> None:
    with connect(host.ws_url, additional_headers=_signed_upgrade()) as ws:
        reply = _ask(ws, {"op": "subscribe", "channels": ["agent:alice", "agent:bob"]})
        assert reply["channels"] == ["agent:alice", "agent:bob"] and reply["rejected"] == []
    # a bad signature is refused at the handshake (closed before accept: HTTP 403)
    with pytest.raises(InvalidStatus) as refused:
        connect(host.ws_url, additional_headers=_signed_upgrade(secret="wrong-secret-0123456789"))
    assert refused.value.response.status_code == 403


def test_envelopes_sequence_and_since_replay(host: HostProcess) -> None:
    channel = f"market:{SYMBOL}"
    with connect(host.ws_url) as ws:
        start = _ask(ws, {"op": "subscribe", "channels": [channel]})["last_sequence"][channel]
        _order(host, "alice", "buy", 45, 3)
        _order(host, "bob", "sell", 44, 5)  # trades 3 at 45, rests 2 at 44
        _order(host, "alice", "buy", 44, 1)
        envelopes = _until(ws, _last_sequence(host))
        assert _drain(ws, 0.2) == []  # and nothing more
    assert [e["sequence_number"] for e in envelopes] == list(range(start + 1, start + 1 + len(envelopes)))
    for envelope in envelopes:
        assert set(envelope) == ENVELOPE_FIELDS and envelope["channel"] == channel
        assert envelope["source_of_truth"] == "orderbook_service" and envelope["producer"] == host.shard_id
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["ts"])
        uuid.UUID(envelope["event_id"])
        payload = envelope["payload"]
        assert not {"account", "maker_account", "taker_account", "client_order_id"} & set(payload)
    types = [e["payload"]["type"] for e in envelopes]
    assert {"order_accepted", "trade", "book"} <= set(types)
    trades = [e["payload"] for e in envelopes if e["payload"]["type"] == "trade"]
    assert [(t["price"], t["quantity"]) for t in trades] == [(45, 3), (44, 1)]
    last = envelopes[-1]["sequence_number"]

    with host.client() as client:
        for after in (start, start + 2, last - 1, last):
            body = client.get("/snapshot", params={"symbol": SYMBOL, "since": after}).json()
            assert body["last_sequence"] == last
            assert body["events"] == [e for e in envelopes if e["sequence_number"] > after]
        plain = client.get("/snapshot", params={"symbol": SYMBOL}).json()
        assert "events" not in plain and plain["last_sequence"] == last
        assert plain["asks"] == [[44, 1]] and all(price < 44 for price, _ in plain["bids"])


def test_since_older_than_the_buffer_is_410(host: HostProcess) -> None:
    with host.client() as client:
        first = client.get("/snapshot", params={"symbol": SYMBOL}).json()["last_sequence"]
    for _ in range(BUFFER // 2 + 1):  # each resting order: order_accepted + book = 2 envelopes
        _order(host, "alice", "buy", 10, 1)
    with host.client() as client:
        last = client.get("/snapshot", params={"symbol": SYMBOL}).json()["last_sequence"]
        assert last - first > BUFFER
        oldest_kept = last - BUFFER + 1
        ok = client.get("/snapshot", params={"symbol": SYMBOL, "since": oldest_kept - 1}).json()
        assert [e["sequence_number"] for e in ok["events"]] == list(range(oldest_kept, last + 1))
        gone = client.get("/snapshot", params={"symbol": SYMBOL, "since": oldest_kept - 2})
        assert gone.status_code == 410
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert gone.json()["code"] == "sequence_too_old"
        assert client.get("/snapshot", params={"symbol": SYMBOL, "since": 0}).status_code == 410


def test_notify_reaches_only_that_agent_in_sequence(host: HostProcess) -> None:
    with connect(host.ws_url) as ws:
        reply = _ask(ws, {"op": "subscribe", "channels": ["agent:bob"], "token": _token("bob")})
        assert reply["channels"] == ["agent:bob"]
        last = reply["last_sequence"]["agent:bob"]
        with host.client() as client:
            response = client.post(
                "/notify", json={"account": "bob", "message": {"kind": "alert", "price": 42}}
            )
            assert response.status_code == 200, response.text
            assert response.json()["result"]["sequence_number"] == last + 1
            for bad, code in (
                ({"account": "nobody", "message": {}}, "unknown_account"),
                ({"account": "bob", "message": [1]}, "validation_error"),
                ({"account": "bob", "message": {"x": "y" * 5000}}, "invalid_message"),
            ):
                refused = client.post("/notify", json=bad)
                assert refused.status_code in (404, 422) and refused.json()["code"] == code
        envelope = json.loads(ws.recv(timeout=10))
        assert envelope["channel"] == "agent:bob" and envelope["sequence_number"] == last + 1
        assert envelope["payload"] == {
            "type": "notice",
            "account": "bob",
            "message": {"kind": "alert", "price": 42},
        }
        assert _drain(ws) == []  # refused notices were never sequenced
