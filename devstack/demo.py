"""Demo data for a fresh local stack, created the way users and admins create it.

A newcomer who opens the API docs should find markets in search and market detail, traders
with money and a resting book, and an admin they can sign in as. So, through the running
functions API (`http://{FUNCTIONS_HOST}:{FUNCTIONS_PORT}`):

1. admins with an enrolled TOTP second factor, created directly (`functions.auth.create_user`,
   as `python -m functions.auth create-admin` does): `demo-admin` (super_admin), and
   `demo-admin-2`, `demo-admin-3` (admin; political markets need approvals from two different
   admins). Each password and TOTP secret is printed once, here;
2. two traders, `demo-alice` and `demo-bob`, registered through `POST /api/v1/auth/register`
   (funded with the play-money starting balance through the host's deposit command);
3. markets through the real lifecycle: `POST /api/v1/market-requests` by a trader →
   `approve_market` with `X-TOTP` (twice for the political one) → `open_market`;
4. a resting book placed with `POST /api/v1/order` by the traders.

Idempotent, step by step: existing users are reused (their tokens minted locally, their TOTP
secret read back from the database with the local key), existing markets are moved only as
far as they still need, and orders carry fixed `client_order_id`s, which the host answers
with the first order. A run that finds everything in place yields "already seeded".

TOTP codes are single-use per user and 30 s step, and the server accepts one step either
side of its own, so at most three codes per admin are usable at once and then one more per
step; `FreshTotp` hands out unused steps (waiting for the next step when all are spent) and
each action goes to the admin who has used the fewest codes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pyotp

from emlib.resources import Resources
from emlib.settings import Settings
from functions import auth

TOTP_STEP_S = 30
# A previous-step code is only offered this early in a step, so the server's clock cannot
# have moved two steps past it by the time the request arrives.
PREVIOUS_STEP_SAFE_S = 20
TOTP_RETRIES = 4

# Three admins, because TOTP codes are scarce (see FreshTotp): seven admin actions spread over
# three people need no wait for a new 30 s step; one admin alone would wait about a minute.
DEMO_ADMINS: list[tuple[str, auth.Role]] = [
    ("demo-admin", "super_admin"),
    ("demo-admin-2", "admin"),
    ("demo-admin-3", "admin"),
]
DEMO_TRADERS = ["demo-alice", "demo-bob"]
_SOURCES = {"sources": ["https://example.org/demo-source"]}
DEMO_MARKETS: list[dict[str, Any]] = [
    {
        "symbol": "US-CPI-2026-12",
        "title": "Will US CPI inflation exceed 3% in December 2026?",
        "description": "Year-on-year CPI-U for December 2026 as published by the BLS.",
        "type": "economic",
        "subtype": "inflation",
        "region": "US",
        "kind": "binary",
        "sources": ["https://www.bls.gov/cpi/"],
        "resolution_criteria": "Resolves YES if the BLS December 2026 CPI-U YoY figure is above 3.0%.",
    },
    {
        "symbol": "ELECTION-2028-DEM",
        "title": "Will the Democratic candidate win the 2028 US presidential election?",
        "description": "The winner as certified by Congress in January 2029.",
        "type": "political",
        "subtype": "election",
        "region": "US",
        "kind": "binary",
        **_SOURCES,
        "resolution_criteria": "Resolves YES if the Democratic nominee is certified as the winner.",
    },
    {
        "symbol": "AI-INDEX",
        "title": "AI compute price index",
        "description": "A demo scalar index of AI compute prices, in index points.",
        "type": "technology",
        "subtype": "index",
        "region": "global",
        "kind": "scalar",
        "tick_size": 5,
        "price_min": 0,
        "price_max": 100_000,
        **_SOURCES,
        "resolution_criteria": "Settles at the index value published on the last trading day.",
    },
]
DEMO_RISK = {"US-CPI-2026-12": "low", "ELECTION-2028-DEM": "high", "AI-INDEX": "medium"}
# (trader, symbol, side, price, quantity); tests/e2e/test_devstack.py checks the CPI book.
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


class FreshTotp:
    """Hands out codes of TOTP steps not used yet, waiting for a new step when none is left."""

    def __init__(
        self,
        secret: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.totp = pyotp.TOTP(secret, interval=TOTP_STEP_S)
        self.clock = clock
        self.sleep = sleep
        self.used: set[int] = set()

    def code(self) -> str:
        while True:
            now = self.clock()
            current = int(now) // TOTP_STEP_S
            candidates = [current + 1, current]
            if now % TOTP_STEP_S < PREVIOUS_STEP_SAFE_S:
                candidates.append(current - 1)
            for step in candidates:
                if step not in self.used:
                    self.used.add(step)
                    return self.totp.at(step * TOTP_STEP_S)
            self.sleep(TOTP_STEP_S - now % TOTP_STEP_S + 0.2)


class Actor:
    def __init__(self, username: str, user_id: str, token: str, totp_secret: str | None = None) -> None:
        self.username = username
        self.user_id = user_id
        self.token = token
        self.totp = FreshTotp(totp_secret) if totp_secret else None


class Seeder:
    def __init__(self, settings: Settings, resources: Resources, api: httpx.Client) -> None:
        self.settings = settings
        self.resources = resources
        self.api = api
        self.codec = auth.TokenCodec(settings)
        self.changed = False

    def _existing(self, username: str) -> auth.UserRow | None:
        with self.resources.pool.connection() as conn:
            return auth.get_user_by_username(conn, username)

    def _mint(self, user: auth.UserRow) -> str:
        return self.codec.mint(user.principal(), time.time())[0]

    def admin(self, username: str, role: auth.Role) -> tuple[Actor, str | None]:
        """The admin, and a line with its credentials when it was created now."""
        user = self._existing(username)
        if user is not None:
            assert user.totp_secret_enc is not None, f"{username} has no TOTP secret"
            secret = auth.open_secret(self.settings, user.id, user.totp_secret_enc)
            return Actor(username, user.id, self._mint(user), secret), None
        password = secrets.token_urlsafe(12)
        principal, new_secret = auth.create_user(self.resources, username, password, role, with_totp=True)
        assert new_secret is not None
        self.changed = True
        token = self.login(username, password)
        line = (
            f"{role} {username}  password {password}  TOTP secret {new_secret}  "
            "(shown once: add the secret to an authenticator app)"
        )
        return Actor(username, principal.user_id, token, new_secret), line

    def login(self, username: str, password: str) -> str:
        response = self.api.post("/api/v1/auth/login", json={"username": username, "password": password})
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def trader(self, username: str) -> tuple[Actor, str | None]:
        user = self._existing(username)
        if user is not None:
            return Actor(username, user.id, self._mint(user)), None
        password = secrets.token_urlsafe(12)
        response = self.api.post("/api/v1/auth/register", json={"username": username, "password": password})
        response.raise_for_status()
        self.changed = True
        body = response.json()
        line = f"trader {username}  password {password}  balance {body['balance_minor']} minor units"
        return Actor(username, body["user_id"], self.login(username, password)), line

    def market(self, request: dict[str, Any], requester: Actor, admins: list[Actor]) -> str | None:
        """Request, approve and open one market as far as still needed; a line when changed."""
        symbol = request["symbol"]
        found = self.api.get(f"/api/v1/markets/{symbol}")
        if found.status_code == 404:
            created = self.api.post("/api/v1/market-requests", json=request, headers=_bearer(requester))
            created.raise_for_status()
            detail = created.json()
        else:
            found.raise_for_status()
            detail = found.json()
        start = detail["status"]
        if detail["status"] == "requested":
            # political markets: each approval from a different admin
            approved_by = {a["admin_id"] for a in detail["approval"]["approvals"]}
            while detail["status"] == "requested":
                admin = _least_used([a for a in admins if a.user_id not in approved_by])
                result = self.act(admin, "approve_market", symbol, {"risk_level": DEMO_RISK[symbol]})
                approved_by.add(admin.user_id)
                detail["status"] = result["market_status"]
        if detail["status"] == "approved":
            detail["status"] = self.act(_least_used(admins), "open_market", symbol, {})["market_status"]
        if detail["status"] == start:
            return None
        self.changed = True
        return f"market {symbol}: {start} -> {detail['status']}"

    def act(self, admin: Actor, action: str, target: str, params: dict[str, Any]) -> dict[str, Any]:
        assert admin.totp is not None
        body = {
            "action": action,
            "target": target,
            "params": params,
            "reason": "demo data for the local stack",
        }
        for _ in range(TOTP_RETRIES):
            headers = {**_bearer(admin), "X-TOTP": admin.totp.code()}
            response = self.api.post("/api/v1/admin/action", json=body, headers=headers)
            if response.status_code == 401 and response.json().get("code") == "totp_invalid":
                continue  # a code this admin used in an earlier run: take the next step's
            if response.status_code != 201:
                raise RuntimeError(f"{action} {target}: {response.status_code} {response.text}")
            result: dict[str, Any] = response.json()
            return result
        raise RuntimeError(f"{action} {target}: no fresh TOTP code accepted")

    def orders(self, traders: dict[str, Actor]) -> int:
        """Place the resting book; returns how many orders were new."""
        new = 0
        for index, (name, symbol, side, price, quantity) in enumerate(DEMO_ORDERS):
            order = {
                "symbol": symbol,
                "side": side,
                "type": "limit",
                "price": price,
                "quantity": quantity,
                "client_order_id": f"demo-{index}",
            }
            response = self.api.post("/api/v1/order", json=order, headers=_bearer(traders[name]))
            response.raise_for_status()
            if not response.json().get("duplicate"):
                new += 1
        if new:
            self.changed = True
        return new


def _least_used(admins: list[Actor]) -> Actor:
    return min(admins, key=lambda a: len(a.totp.used) if a.totp else 0)


def _bearer(actor: Actor) -> dict[str, str]:
    return {"Authorization": f"Bearer {actor.token}"}


def seed_demo_data(settings: Settings, database_url: str) -> Iterator[str]:
    settings = settings.model_copy(update={"database_url": database_url})
    resources = Resources(settings)
    base_url = f"http://{settings.functions_host}:{settings.functions_port}"
    try:
        with httpx.Client(base_url=base_url, timeout=30) as api:
            seeder = Seeder(settings, resources, api)
            admins: list[Actor] = []
            for username, role in DEMO_ADMINS:
                admin, line = seeder.admin(username, role)
                admins.append(admin)
                if line:
                    yield line
            traders: dict[str, Actor] = {}
            for username in DEMO_TRADERS:
                traders[username], line = seeder.trader(username)
                if line:
                    yield line
            for request in DEMO_MARKETS:
                line = seeder.market(request, traders[DEMO_TRADERS[0]], admins)
                if line:
                    yield line
            placed = seeder.orders(traders)
            if placed:
                yield f"{placed} resting orders placed"
            if not seeder.changed:
                yield "already seeded"
            else:
                yield f"ready: {len(DEMO_MARKETS)} markets, {len(DEMO_TRADERS)} traders; try {base_url}/docs"
    finally:
        resources.close()
