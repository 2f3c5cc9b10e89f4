"""Commands: everything the engine needs from outside, frozen, plus their WAL encoding.

A command carries every value that the outside world decides (server order ids, timestamps,
expiry instants), so applying the same commands in the same order always gives the same state.
The host writes ``encode_command(cmd)`` to its WAL before applying ``cmd``; replay is
``exchange.apply(decode_command(record))``.

Encoding (version 1): a compact JSON array ``[1, tag, field1, field2, ...]`` with the fields in
declaration order. Arrays rather than objects keep records small; the leading version lets a
later layout be read beside this one. ``decode_command`` refuses unknown versions and tags
with ``CommandDecodeError`` (a corrupt or foreign record is a programmer/storage error, not a
trading outcome).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from typing import Final

from orderbook_host.engine.frozen import fast_frozen_init

COMMAND_VERSION: Final = 1

# Enumerations travel as short strings (readable in a WAL dump, JSON-native).
SIDES: Final = ("buy", "sell")
ORDER_TYPES: Final = ("limit", "market")
TIME_IN_FORCE: Final = ("GTC", "IOC", "FOK", "GTD")
STP_MODES: Final = ("cancel_oldest", "cancel_newest", "cancel_both", "decrement")
MARKET_KINDS: Final = ("binary", "scalar")
SETTABLE_STATUSES: Final = ("open", "halted", "closed")


class CommandDecodeError(ValueError):
    """A WAL payload that is not a version-1 command."""


@dataclass(frozen=True, slots=True)
class CreateMarket:
    """Create a market. Binary markets ignore the bounds given and use 1..99, tick 1, settle 0|100.

    Scalar markets trade on ``price_min + k * tick_size`` up to ``price_max`` and settle at any
    grid price inside the bounds. ``multiplier_minor`` is the money, in minor units, of one
    price unit on one contract (binary default 1: a contract settles at 100 minor units).
    """

    symbol: str
    kind: str
    ts_ms: int
    tick_size: int = 1
    price_min: int = 1
    price_max: int = 99
    multiplier_minor: int = 1
    allow_short: bool = True
    status: str = "open"


@dataclass(frozen=True, slots=True)
class SetMarketStatus:
    """open <-> halted; open|halted -> closed (closing cancels every resting order)."""

    symbol: str
    status: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class ResolveMarket:
    """Cancel what rests, pay every position at ``settlement_price``; the market is settled."""

    symbol: str
    settlement_price: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Deposit:
    """Credit free cash; the first deposit creates the account."""

    account: str
    amount_minor: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Debit free cash (never reserved cash); refused with ``insufficient_funds`` beyond it."""

    account: str
    amount_minor: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Submit an order. ``price`` is the limit (limit orders) or the protection price (market
    orders: the worst price it may trade at; default the market's max for buys, min for sells).

    ``server_order_id`` comes from the host (``Exchange.next_order_id``) and must rise.
    ``expire_at_ms`` only with ``time_in_force="GTD"``. ``stp`` is the self-trade prevention
    mode applied when this order would trade against its own account's resting order.
    """

    server_order_id: int
    account: str
    symbol: str
    side: str
    quantity: int
    ts_ms: int
    order_type: str = "limit"
    price: int | None = None
    time_in_force: str = "GTC"
    post_only: bool = False
    client_order_id: str | None = None
    expire_at_ms: int | None = None
    stp: str = "cancel_oldest"


@dataclass(frozen=True, slots=True)
class CancelOrder:
    account: str
    server_order_id: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class ReplaceOrder:
    """Change a resting order's open quantity and/or price.

    ``quantity`` is the new *open* quantity (what may still trade). Same price and a smaller
    quantity keeps queue priority; a new price or a larger quantity re-queues the order at the
    back of its level (and it may trade at once if the new price crosses). ``price=None`` keeps
    the price.
    """

    account: str
    server_order_id: int
    quantity: int
    ts_ms: int
    price: int | None = None


@dataclass(frozen=True, slots=True)
class ExpireOrders:
    """Expire every GTD order with ``expire_at_ms <= now_ms`` (the engine has no clock)."""

    now_ms: int


fast_frozen_init(
    CreateMarket,
    SetMarketStatus,
    ResolveMarket,
    Deposit,
    Withdraw,
    PlaceOrder,
    CancelOrder,
    ReplaceOrder,
    ExpireOrders,
)

Command = (
    CreateMarket
    | SetMarketStatus
    | ResolveMarket
    | Deposit
    | Withdraw
    | PlaceOrder
    | CancelOrder
    | ReplaceOrder
    | ExpireOrders
)

_TAGS: Final[dict[type, str]] = {
    CreateMarket: "cm",
    SetMarketStatus: "ms",
    ResolveMarket: "rm",
    Deposit: "dp",
    Withdraw: "wd",
    PlaceOrder: "po",
    CancelOrder: "co",
    ReplaceOrder: "ro",
    ExpireOrders: "ex",
}
_BY_TAG: Final[dict[str, type]] = {tag: cls for cls, tag in _TAGS.items()}
_FIELD_NAMES: Final[dict[type, tuple[str, ...]]] = {cls: tuple(f.name for f in fields(cls)) for cls in _TAGS}
_ARITY: Final[dict[str, tuple[int, int]]] = {
    tag: (sum(1 for f in fields(cls) if f.default is MISSING), len(fields(cls)))
    for tag, cls in _BY_TAG.items()
}
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_command(cmd: Command) -> bytes:
    """Compact, versioned bytes for the WAL: ``[1,"po",...fields]`` as UTF-8 JSON."""
    cls = type(cmd)
    values = [getattr(cmd, name) for name in _FIELD_NAMES[cls]]
    return _ENCODER.encode([COMMAND_VERSION, _TAGS[cls], *values]).encode()


def decode_command(data: bytes) -> Command:
    """Inverse of ``encode_command``; raises ``CommandDecodeError`` on anything else."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandDecodeError("command payload is not JSON") from e
    if not isinstance(raw, list) or len(raw) < 2 or raw[0] != COMMAND_VERSION:
        raise CommandDecodeError("not a version-1 command record")
    tag = raw[1]
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise CommandDecodeError(f"unknown command tag {tag!r}")
    n_required, n_all = _ARITY[tag]
    if not n_required <= len(raw) - 2 <= n_all:
        raise CommandDecodeError(f"wrong field count for {tag!r}")
    cmd: Command = cls(*raw[2:])
    return cmd
