"""`GET /api/v1/search` against real PostgreSQL: filters, full-text ranking, each sort, keyset
pagination (no duplicates or gaps, stable under inserts) and bad parameters."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emlib.resources import Resources
from emlib.settings import Settings
from functions.app import create_app
from functions.routers.search import decode_cursor, encode_cursor

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_trade_ids = itertools.count(1)


@dataclass
class Api:
    client: TestClient
    resources: Resources
    settings: Settings


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    # No orderbook host: search, watchlists and alerts only read and write PostgreSQL.
    settings = Settings(APP_ENV="test", DATABASE_URL=db_url, DATA_DIR=str(tmp_path))
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client, app.state.resources, settings)
    app.state.orderbook.close()
    app.state.resources.close()


def add_market(
    resources: Resources,
    symbol: str,
    title: str,
    *,
    description: str = "",
    type: str = "economic",
    subtype: str = "",
    region: str = "US",
    risk_level: str = "low",
    kind: str = "binary",
    status: str = "open",
    volume: int = 0,
    created_at: datetime = T0,
    price_min: int = 1,
    price_max: int = 99,
    tick_size: int = 1,
) -> None:
    """A market row as an approval would leave it (with a real audit event behind it)."""
    audit_id = None
    if status not in ("requested", "rejected"):
        audit_id = resources.audit_log().append(actor="u-admin", action="approve_market", target=symbol).id
    with resources.pool.connection() as conn:
        conn.execute(
            "INSERT INTO markets (symbol, title, description, type, subtype, region, risk_level, kind,"
            " tick_size, price_min, price_max, status, created_by, human_approval_audit_id,"
            " resolution_criteria, volume, created_at, settlement_price)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                symbol,
                title,
                description,
                type,
                subtype,
                region,
                risk_level if audit_id else None,
                kind,
                tick_size,
                price_min,
                price_max,
                status,
                "u-" + "0" * 32,
                audit_id,
                "the official source says so",
                volume,
                created_at,
                100 if status == "settled" else None,
            ),
        )


def add_trade(resources: Resources, symbol: str, price: int, quantity: int, ts_ms: int) -> int:
    trade_id = next(_trade_ids)
    with resources.pool.connection() as conn:
        conn.execute(
            "INSERT INTO rm_trades (trade_id, symbol, price, quantity, taker_side, maker_order_id,"
            " taker_order_id, maker_account, taker_account, ts_ms, wal_seq)"
            " VALUES (%s, %s, %s, %s, 'buy', 1, 2, 'u-a', 'u-b', %s, %s)",
            (trade_id, symbol, price, quantity, ts_ms, trade_id),
        )
    return trade_id


def symbols(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["symbol"] for item in response.json()["items"]]


def walk(client: TestClient, params: dict[str, Any], between: Any = None) -> list[str]:
    """Every page of a search; `between(page_number)` runs after each page."""
    seen: list[str] = []
    cursor: str | None = None
    page = 0
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = client.get("/api/v1/search", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= params.get("limit", 20)
        seen.extend(item["symbol"] for item in body["items"])
        cursor = body["next_cursor"]
        page += 1
        if between is not None:
            between(page)
        if cursor is None:
            return seen
        assert page < 100


# --- filters -----------------------------------------------------------------------------


def test_items_carry_the_contract_fields_and_hide_unapproved_markets(api: Api) -> None:
    add_market(api.resources, "OPEN-1", "Open market", status="open")
    add_market(api.resources, "REQ-1", "Requested market", status="requested")
    add_market(api.resources, "REJ-1", "Rejected market", status="rejected")
    for status in ("approved", "halted", "closed", "resolved", "settled"):
        add_market(api.resources, f"{status.upper()}-1", f"{status} market", status=status)
    response = api.client.get("/api/v1/search")
    found = symbols(response)
    assert sorted(found) == ["APPROVED-1", "CLOSED-1", "HALTED-1", "OPEN-1", "RESOLVED-1", "SETTLED-1"]
    item = next(i for i in response.json()["items"] if i["symbol"] == "OPEN-1")
    for field in (
        "symbol",
        "title",
        "type",
        "subtype",
        "region",
        "risk_level",
        "kind",
        "status",
        "created_by",
        "human_approval_audit_id",
        "tick_size",
        "price_min",
        "price_max",
    ):
        assert field in item
    assert item["human_approval_audit_id"]
    assert (item["tick_size"], item["price_min"], item["price_max"]) == (1, 1, 99)
    assert response.json()["next_cursor"] is None


def test_filters_by_type_region_risk_kind_and_status(api: Api) -> None:
    r = api.resources
    add_market(r, "A", "Alpha", type="political", region="EU", risk_level="high")
    add_market(r, "B", "Bravo", type="political", region="US", risk_level="low")
    add_market(r, "C", "Charlie", type="sports", region="EU", risk_level="high", status="halted")
    add_market(
        r,
        "D",
        "Delta index",
        type="finance",
        region="EU",
        kind="scalar",
        price_min=0,
        price_max=1000,
        tick_size=5,
    )
    get = api.client.get
    assert sorted(symbols(get("/api/v1/search", params={"type": "political"}))) == ["A", "B"]
    assert sorted(symbols(get("/api/v1/search", params={"region": "eu"}))) == ["A", "C", "D"]
    assert sorted(symbols(get("/api/v1/search", params={"risk": "high"}))) == ["A", "C"]
    assert symbols(get("/api/v1/search", params={"kind": "scalar"})) == ["D"]
    assert symbols(get("/api/v1/search", params={"status": "halted"})) == ["C"]
    assert symbols(get("/api/v1/search", params={"type": "political", "region": "EU", "risk": "high"})) == [
        "A"
    ]
    assert symbols(get("/api/v1/search", params={"type": "culture"})) == []


# --- full text ---------------------------------------------------------------------------


def test_full_text_matches_stems_and_ranks_title_above_description(api: Api) -> None:
    r = api.resources
    add_market(r, "DESC", "Will the central bank move", description="Inflation is the topic here")
    add_market(r, "TITLE", "US inflation above 3 percent", description="Monthly CPI print")
    add_market(r, "OTHER", "Lakers win the title", type="sports")
    # "inflationary" stems like "inflation"; the title match (weight A) outranks the description (C)
    assert symbols(api.client.get("/api/v1/search", params={"q": "inflation"})) == ["TITLE", "DESC"]
    # websearch syntax: a phrase, and an excluded word
    assert symbols(api.client.get("/api/v1/search", params={"q": '"central bank"'})) == ["DESC"]
    assert symbols(api.client.get("/api/v1/search", params={"q": "inflation -cpi"})) == ["DESC"]
    # text and filters combine; stop words alone match nothing rather than everything
    assert symbols(api.client.get("/api/v1/search", params={"q": "lakers", "type": "economic"})) == []
    assert symbols(api.client.get("/api/v1/search", params={"q": "the"})) == []
    # with q, an explicit sort still filters by the text
    add_market(r, "BIG", "Inflation falls", volume=500)
    assert symbols(api.client.get("/api/v1/search", params={"q": "inflation", "sort": "volume"}))[0] == "BIG"


def test_relevance_pagination_over_equal_ranks(api: Api) -> None:
    for i in range(25):
        add_market(api.resources, f"FED-{i:02d}", f"Fed decision number {i}")
    add_market(api.resources, "NOPE", "Unrelated")
    params = {"q": "fed decision", "limit": 7}
    found = walk(api.client, params)
    assert found == sorted(f"FED-{i:02d}" for i in range(25))


# --- sorts -------------------------------------------------------------------------------


def test_sort_recency_and_volume(api: Api) -> None:
    r = api.resources
    add_market(r, "OLD", "Old", created_at=T0, volume=900)
    add_market(r, "MID", "Mid", created_at=T0 + timedelta(hours=1), volume=5)
    add_market(r, "NEW", "New", created_at=T0 + timedelta(hours=2), volume=50)
    assert symbols(api.client.get("/api/v1/search")) == ["NEW", "MID", "OLD"]
    assert symbols(api.client.get("/api/v1/search", params={"sort": "recency"})) == ["NEW", "MID", "OLD"]
    assert symbols(api.client.get("/api/v1/search", params={"sort": "volume"})) == ["OLD", "NEW", "MID"]


def test_sort_trending_is_growth_over_the_previous_day(api: Api) -> None:
    r = api.resources
    now_ms = int(time.time() * 1000)
    hour_ms = 3600 * 1000
    for symbol in ("HOT", "STEADY", "COOLING", "QUIET"):
        add_market(r, symbol, symbol.title())
    add_trade(r, "HOT", 50, 30, now_ms - hour_ms)  # 30 today, 0 yesterday: +30
    add_trade(r, "STEADY", 50, 100, now_ms - 2 * hour_ms)  # 100 today, 90 yesterday: +10
    add_trade(r, "STEADY", 50, 90, now_ms - 30 * hour_ms)
    add_trade(r, "COOLING", 50, 5, now_ms - hour_ms)  # 5 today, 200 yesterday: -195
    add_trade(r, "COOLING", 50, 200, now_ms - 40 * hour_ms)
    add_trade(r, "QUIET", 50, 1000, now_ms - 60 * hour_ms)  # older than both windows: 0
    response = api.client.get("/api/v1/search", params={"sort": "trending"})
    assert symbols(response) == ["HOT", "STEADY", "QUIET", "COOLING"]
    by_symbol = {i["symbol"]: i for i in response.json()["items"]}
    assert (by_symbol["STEADY"]["volume_24h"], by_symbol["STEADY"]["volume_prev_24h"]) == (100, 90)
    assert (by_symbol["QUIET"]["volume_24h"], by_symbol["QUIET"]["volume_prev_24h"]) == (0, 0)
    # other sorts do not compute the windows
    assert api.client.get("/api/v1/search").json()["items"][0]["volume_24h"] is None


# --- pagination --------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["recency", "volume", "trending"])
def test_pages_cover_everything_once_in_order_despite_inserts(api: Api, sort: str) -> None:
    r = api.resources
    now_ms = int(time.time() * 1000)
    for i in range(53):
        # repeated sort keys (i // 4) force the symbol tie-break across page boundaries
        add_market(r, f"M-{i:03d}", f"Market {i}", created_at=T0 + timedelta(minutes=i // 4), volume=i // 4)
        if i % 3 == 0:
            add_trade(r, f"M-{i:03d}", 50, 1 + i // 4, now_ms - 60_000)
    everything = symbols(api.client.get("/api/v1/search", params={"sort": sort, "limit": 100}))
    assert len(everything) == 53

    inserted = itertools.count()

    def insert_newcomer(_page: int) -> None:
        # A market created and trading after the first page must not shift the later pages.
        n = next(inserted)
        symbol = f"NEW-{n}"
        created_at = datetime.now(UTC) + timedelta(seconds=1)
        add_market(r, symbol, f"Newcomer {n}", created_at=created_at, volume=10_000)
        add_trade(r, symbol, 50, 10_000, int(time.time() * 1000) + 1000)

    # recency and volume: the newcomer sorts before the first page; trending: the cursor pins
    # the instant of the first page, so later markets and trades are not in its windows
    found = walk(api.client, {"sort": sort, "limit": 10}, between=insert_newcomer)
    assert found == everything
    assert len(set(found)) == len(found) == 53


def test_cursor_round_trip_and_refusals(api: Api) -> None:
    for i in range(3):
        add_market(api.resources, f"P-{i}", f"Paged {i}")
    first = api.client.get("/api/v1/search", params={"limit": 2}).json()
    cursor = first["next_cursor"]
    assert isinstance(cursor, str)
    assert symbols(api.client.get("/api/v1/search", params={"limit": 2, "cursor": cursor})) == ["P-2"]

    def refused(params: dict[str, Any]) -> str:
        response = api.client.get("/api/v1/search", params=params)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        code: str = response.json()["code"]
        return code

    # garbage, valid base64 of non-JSON, JSON of the wrong shape, a forged key type
    assert refused({"cursor": "!!!"}) == "invalid_cursor"
    assert refused({"cursor": "bm90IGpzb24"}) == "invalid_cursor"
    assert refused({"cursor": encode_cursor({"x": 1})}) == "invalid_cursor"
    state = decode_cursor(cursor)
    assert refused({"cursor": encode_cursor({**state, "k": ["not a time"]})}) == "invalid_cursor"
    assert refused({"cursor": encode_cursor({**state, "k": [1]})}) == "invalid_cursor"
    assert refused({"cursor": "A" * 2000}) == "invalid_cursor"
    # a cursor is bound to its sort and filters
    assert refused({"limit": 2, "cursor": cursor, "sort": "volume"}) == "invalid_cursor"
    assert refused({"limit": 2, "cursor": cursor, "type": "economic"}) == "invalid_cursor"
    volume_cursor = api.client.get("/api/v1/search", params={"limit": 2, "sort": "volume"}).json()[
        "next_cursor"
    ]
    forged = encode_cursor({**decode_cursor(volume_cursor), "k": [2**63]})
    assert refused({"sort": "volume", "cursor": forged}) == "invalid_cursor"


BAD_PARAMS: list[tuple[dict[str, Any], int, str]] = [
    ({"type": "weather"}, 422, "invalid_enum"),
    ({"risk": "extreme"}, 422, "invalid_enum"),
    ({"sort": "random"}, 422, "invalid_enum"),
    ({"status": "requested"}, 422, "invalid_enum"),
    ({"kind": "ternary"}, 422, "invalid_enum"),
    ({"limit": 0}, 422, "validation_error"),
    ({"limit": 101}, 422, "validation_error"),
    ({"limit": "ten"}, 422, "validation_error"),
    ({"q": "x" * 201}, 422, "validation_error"),
    ({"sort": "relevance"}, 422, "query_required"),
    ({"region": "r" * 65}, 422, "validation_error"),
]


def test_bad_parameters_are_4xx_with_a_code(api: Api) -> None:
    for params, status, code in BAD_PARAMS:
        response = api.client.get("/api/v1/search", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["code"] == code, params


def test_odd_text_is_not_a_server_error(api: Api) -> None:
    add_market(api.resources, "ODD", "Odd one")
    for q in ["'", '"', "&|!", "(", "a:*", "\\", "-", "or or", "ünïcødé", "%", "%(q)s"]:
        response = api.client.get("/api/v1/search", params={"q": q})
        assert response.status_code == 200, (q, response.text)
