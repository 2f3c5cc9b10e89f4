"""`GET /api/v1/search`: find publicly visible markets by taxonomy, free text and activity.

The problem: a browser or an agent lists markets page by page while markets are created and
trade; each page must continue exactly where the last one ended, with no market repeated or
skipped, and bad input must be a 4xx with a code, never a 500 (docs/specs/search.md).

- Free text is PostgreSQL full-text search: `websearch_to_tsquery('english', q)` against the
  generated `markets.search_vector` (title weighs most, then subtype and region, then the
  description). With `q` and no `sort`, results are ranked (`ts_rank`).
- Sorts: `relevance` (needs `q`), `recency` (created_at), `volume` (contracts traded all time),
  `trending` (contracts traded in the 24 h before the first page minus the 24 h before that).
- Pagination is keyset, not offset: the opaque cursor carries the last item's sort key and
  symbol, so a market inserted meanwhile cannot shift later pages. The cursor also pins the
  request's filters (a fingerprint) and, for `trending`, the instant the first page was computed:
  windows end at that instant and later markets are left out, so trades and markets arriving
  meanwhile cannot reorder or pad later pages.
  `volume` is read live, so a market that trades between two pages may move across them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from emlib.problems import ProblemError
from functions.deps import ResourcesDep

router = APIRouter(tags=["search"])

MarketType = Literal["political", "economic", "social", "technology", "finance", "culture", "sports"]
RiskLevel = Literal["low", "medium", "high"]
Kind = Literal["binary", "scalar"]
PublicStatus = Literal["approved", "open", "halted", "closed", "resolved", "settled"]
Sort = Literal["relevance", "recency", "volume", "trending"]

# Requested and rejected markets are not public (they are visible to their requester and
# admins through the market-request endpoints).
PUBLIC_STATUSES: tuple[str, ...] = ("approved", "open", "halted", "closed", "resolved", "settled")
LIMIT_DEFAULT = 20
LIMIT_MAX = 100
Q_MAX_CHARS = 200
CURSOR_MAX_CHARS = 1024
TRENDING_WINDOW_MS = 24 * 3600 * 1000
# ts_rank is a real; scaled to an integer so the cursor carries no float.
RANK_SCALE = 1_000_000

# Market fields every item carries (contract.md "Markets"), in this order.
MARKET_COLUMNS = (
    "symbol",
    "title",
    "description",
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
    "volume",
    "last_trade_at",
    "created_at",
)


class MarketItem(BaseModel):
    symbol: str
    title: str
    description: str
    type: str
    subtype: str
    region: str
    risk_level: str | None
    kind: str
    status: str
    created_by: str
    human_approval_audit_id: str | None
    tick_size: int
    price_min: int
    price_max: int
    volume: int
    last_trade_at: datetime | None
    created_at: datetime
    # `trending` only: contracts traded in the 24 h window and in the 24 h before it.
    volume_24h: int | None = None
    volume_prev_24h: int | None = None


class SearchPage(BaseModel):
    items: list[MarketItem]
    next_cursor: str | None


def market_item(row: dict[str, Any]) -> MarketItem:
    return MarketItem.model_validate(row)


# --- cursor ------------------------------------------------------------------------------


def encode_cursor(state: dict[str, Any]) -> str:
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The cursor's state, or 400 `invalid_cursor` for anything this router did not write."""
    bad = ProblemError(400, "invalid_cursor", "cursor is not one this endpoint returned")
    if len(cursor) > CURSOR_MAX_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise bad from exc
    if not isinstance(state, dict):
        raise bad
    return state


def _fingerprint(sort: str, filters: dict[str, str | None]) -> str:
    text = json.dumps({"sort": sort, **filters}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _after(keys: list[str], values: list[Any], symbol: str) -> tuple[str, dict[str, Any]]:
    """Rows after (keys..., symbol) in `ORDER BY keys DESC..., symbol ASC` order."""
    sql = "symbol > %(after_symbol)s"
    params: dict[str, Any] = {"after_symbol": symbol}
    for i, (key, value) in reversed(list(enumerate(zip(keys, values, strict=True)))):
        sql = f"({key} < %(after_{i})s OR ({key} = %(after_{i})s AND {sql}))"
        params[f"after_{i}"] = value
    return sql, params


def _int_key(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**62:
        raise ProblemError(400, "invalid_cursor", "cursor is not one this endpoint returned")
    return value


def _cursor_values(state: dict[str, Any], sort: str, fingerprint: str) -> tuple[list[Any], str, int | None]:
    bad = ProblemError(400, "invalid_cursor", "cursor is not one this endpoint returned")
    if state.get("f") != fingerprint:
        raise ProblemError(
            400, "invalid_cursor", "cursor belongs to a search with other filters, text or sort"
        )
    symbol = state.get("s")
    keys = state.get("k")
    if not isinstance(symbol, str) or not isinstance(keys, list) or len(symbol) > 32:
        raise bad
    as_of_ms: int | None = None
    if sort == "recency":
        if len(keys) != 1 or not isinstance(keys[0], str):
            raise bad
        try:
            values: list[Any] = [datetime.fromisoformat(keys[0])]
        except ValueError as exc:
            raise bad from exc
        if values[0].tzinfo is None:
            raise bad
    elif sort == "trending":
        if len(keys) != 2:
            raise bad
        values = [_int_key(k) for k in keys]
        as_of_ms = _int_key(state.get("t"))
    else:
        if len(keys) != 1:
            raise bad
        values = [_int_key(keys[0])]
    return values, symbol, as_of_ms


# --- the route ---------------------------------------------------------------------------


@router.get("/api/v1/search", response_model=SearchPage)
def search(
    resources: ResourcesDep,
    type: Annotated[MarketType | None, Query()] = None,
    region: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    risk: Annotated[RiskLevel | None, Query()] = None,
    kind: Annotated[Kind | None, Query()] = None,
    status: Annotated[PublicStatus | None, Query()] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=Q_MAX_CHARS)] = None,
    sort: Annotated[Sort | None, Query()] = None,
    cursor: Annotated[str | None, Query(min_length=1)] = None,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = LIMIT_DEFAULT,
) -> SearchPage:
    text = q.strip() if q is not None else None
    if text == "":
        text = None
    effective_sort: str = sort or ("relevance" if text else "recency")
    if effective_sort == "relevance" and text is None:
        raise ProblemError(422, "query_required", "sort=relevance needs a non-empty q")
    filters = {"type": type, "region": region, "risk": risk, "kind": kind, "status": status, "q": text}
    fingerprint = _fingerprint(effective_sort, filters)
    after_values: list[Any] | None = None
    after_symbol = ""
    as_of_ms: int | None = None
    if cursor is not None:
        after_values, after_symbol, as_of_ms = _cursor_values(
            decode_cursor(cursor), effective_sort, fingerprint
        )
    if effective_sort == "trending" and as_of_ms is None:
        as_of_ms = int(time.time() * 1000)

    where = ["m.status = ANY(%(public)s)"]
    params: dict[str, Any] = {"public": list(PUBLIC_STATUSES)}
    if type is not None:
        where.append("m.type = %(type)s")
        params["type"] = type
    if region is not None:
        where.append("lower(m.region) = lower(%(region)s)")
        params["region"] = region
    if risk is not None:
        where.append("m.risk_level = %(risk)s")
        params["risk"] = risk
    if kind is not None:
        where.append("m.kind = %(kind)s")
        params["kind"] = kind
    if status is not None:
        where.append("m.status = %(status)s")
        params["status"] = status
    if text is not None:
        where.append("m.search_vector @@ websearch_to_tsquery('english', %(q)s)")
        params["q"] = text

    columns = ", ".join(f"m.{c}" for c in MARKET_COLUMNS)
    extra = ""
    joins = ""
    if effective_sort == "relevance":
        extra = (
            f", (ts_rank(m.search_vector, websearch_to_tsquery('english', %(q)s)) * {RANK_SCALE})"
            "::bigint AS k1"
        )
        keys = ["k1"]
    elif effective_sort == "recency":
        extra = ", m.created_at AS k1"
        keys = ["k1"]
    elif effective_sort == "volume":
        extra = ", m.volume AS k1"
        keys = ["k1"]
    else:
        assert as_of_ms is not None
        # Growth first (what is heating up), then the recent volume itself.
        joins = (
            " LEFT JOIN (SELECT symbol,"
            " sum(quantity) FILTER (WHERE ts_ms > %(w1)s)::bigint AS recent,"
            " sum(quantity) FILTER (WHERE ts_ms <= %(w1)s)::bigint AS previous"
            " FROM rm_trades WHERE ts_ms > %(w2)s AND ts_ms <= %(as_of)s GROUP BY symbol) t"
            " ON t.symbol = m.symbol"
        )
        params.update(as_of=as_of_ms, w1=as_of_ms - TRENDING_WINDOW_MS, w2=as_of_ms - 2 * TRENDING_WINDOW_MS)
        # Markets created after the first page are not part of this listing.
        where.append("m.created_at <= to_timestamp(%(as_of)s / 1000.0)")
        extra = (
            ", coalesce(t.recent, 0) - coalesce(t.previous, 0) AS k1, coalesce(t.recent, 0) AS k2,"
            " coalesce(t.recent, 0) AS volume_24h, coalesce(t.previous, 0) AS volume_prev_24h"
        )
        keys = ["k1", "k2"]

    inner = f"SELECT {columns}{extra} FROM markets m{joins} WHERE {' AND '.join(where)}"
    outer_where = ""
    if after_values is not None:
        cond, after_params = _after(keys, after_values, after_symbol)
        outer_where = f" WHERE {cond}"
        params.update(after_params)
    order = ", ".join(f"{k} DESC" for k in keys) + ", symbol ASC"
    params["limit"] = limit + 1
    sql = f"SELECT * FROM ({inner}) s{outer_where} ORDER BY {order} LIMIT %(limit)s"

    with resources.pool.connection() as conn:
        cur = conn.execute(sql.encode(), params)
        names = [d.name for d in cur.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor: str | None = None
    if has_more and rows:
        last = rows[-1]
        key_values: list[Any] = [last[k] for k in keys]
        if effective_sort == "recency":
            key_values = [last["k1"].isoformat()]
        state: dict[str, Any] = {"f": fingerprint, "s": last["symbol"], "k": key_values}
        if as_of_ms is not None:
            state["t"] = as_of_ms
        next_cursor = encode_cursor(state)
    return SearchPage(items=[market_item(r) for r in rows], next_cursor=next_cursor)
