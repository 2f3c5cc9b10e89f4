"""Signed calls from the functions API to the orderbook host that owns a symbol.

The host answers problem+json for refusals; `OrderbookError` carries that status and body so
routes can pass the host's code through unchanged (`insufficient_funds`, `market_not_open`...).
One client per process (connection reuse matters on Lambda too); sharding is a static map in
settings, resolved here.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from emlib.problems import ProblemError
from emlib.settings import Settings
from emlib.signing_http import HmacAuth

TIMEOUT_S = 5.0


class OrderbookError(ProblemError):
    """The host refused (4xx) or failed (5xx, unreachable → 503 `orderbook_unavailable`)."""


class OrderbookClient:
    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        key = settings.hmac_keys[-1]
        self._settings = settings
        self._client = httpx.Client(
            base_url=settings.orderbook_url,
            auth=HmacAuth(key.id, key.secret),
            timeout=TIMEOUT_S,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise OrderbookError(503, "orderbook_unavailable", f"orderbook host unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = body.get("code", "orderbook_error") if isinstance(body, dict) else "orderbook_error"
            status = response.status_code if response.status_code < 500 else 502
            extra = {k: v for k, v in body.items() if k not in {"type", "title", "status", "detail", "code"}}
            raise OrderbookError(status, code, str(body.get("detail", "")), extra=extra)
        return response.json()

    # orders
    def place_order(self, order: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/order", json=order)
        return result

    def cancel_order(self, account: str, server_order_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/cancel", json={"account": account, "server_order_id": server_order_id}
        )
        return result

    def snapshot(self, symbol: str, since: int | None = None, depth: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"symbol": symbol, "depth": depth}
        if since is not None:
            params["since"] = since
        result: dict[str, Any] = self._call("GET", "/snapshot", params=params)
        return result

    # accounts
    def deposit(self, account: str, amount_minor: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/accounts/{account}/deposit", json={"amount_minor": amount_minor}
        )
        return result

    def account(self, account: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/accounts/{account}")
        return result

    def notify(self, account: str, message: dict[str, Any]) -> dict[str, Any]:
        """Deliver `message` on the account's private channel `agent:{account}`."""
        result: dict[str, Any] = self._call("POST", "/notify", json={"account": account, "message": message})
        return result

    # markets (admin side)
    def create_market(self, market: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/markets", json=market)
        return result

    def set_market_status(self, symbol: str, status: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/markets/{symbol}/status", json={"status": status})
        return result

    def resolve_market(self, symbol: str, settlement_price: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/markets/{symbol}/resolve", json={"settlement_price": settlement_price}
        )
        return result

    def ping(self) -> None:
        response = self._client.get("/health")
        response.raise_for_status()
