"""Demo data for a fresh local stack: a few markets on the orderbook host, two funded demo
traders and a resting book. Idempotent: a second run finds the markets and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from emlib.settings import Settings
from emlib.signing_http import HmacAuth

DEMO_MARKETS = [
    {"symbol": "US-CPI-2026-12", "kind": "binary"},
    {"symbol": "ELECTION-2028-DEM", "kind": "binary"},
    {"symbol": "AI-INDEX", "kind": "scalar", "tick_size": 5, "price_min": 0, "price_max": 100_000},
]
DEMO_TRADERS = {"demo-alice": 1_000_000, "demo-bob": 1_000_000}
DEMO_ORDERS = [
    ("demo-alice", "US-CPI-2026-12", "buy", 41, 50),
    ("demo-alice", "US-CPI-2026-12", "buy", 40, 120),
    ("demo-bob", "US-CPI-2026-12", "sell", 44, 80),
    ("demo-bob", "US-CPI-2026-12", "sell", 46, 200),
    ("demo-alice", "ELECTION-2028-DEM", "buy", 52, 30),
    ("demo-bob", "ELECTION-2028-DEM", "sell", 55, 30),
    ("demo-alice", "AI-INDEX", "buy", 49_500, 10),
    ("demo-bob", "AI-INDEX", "sell", 50_500, 10),
]


def seed_demo_data(settings: Settings, database_url: str) -> Iterator[str]:
    del database_url  # the read model arrives with the functions API issue
    key = settings.hmac_keys[-1]
    with httpx.Client(base_url=settings.orderbook_url, auth=HmacAuth(key.id, key.secret), timeout=10) as ob:
        created = 0
        for market in DEMO_MARKETS:
            response = ob.post("/markets", json=market)
            if response.status_code == 409 and response.json().get("code") == "market_exists":
                continue
            response.raise_for_status()
            created += 1
        if created == 0:
            yield "already seeded"
            return
        for account, amount in DEMO_TRADERS.items():
            ob.post(f"/accounts/{account}/deposit", json={"amount_minor": amount}).raise_for_status()
        for index, (account, symbol, side, price, quantity) in enumerate(DEMO_ORDERS):
            order = {
                "account": account,
                "symbol": symbol,
                "side": side,
                "price": price,
                "quantity": quantity,
                "client_order_id": f"demo-{index}",
            }
            ob.post("/order", json=order).raise_for_status()
        yield f"{created} markets, {len(DEMO_TRADERS)} funded traders, {len(DEMO_ORDERS)} resting orders"
