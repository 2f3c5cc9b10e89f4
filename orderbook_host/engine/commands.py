"""Commands: everything the engine needs from outside, read-only, plus their WAL encoding.

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

from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Final

import orjson

COMMAND_VERSION: Final = 1

# Enumerations travel as short strings (readable in a WAL dump, JSON-native).
SIDES: Final = ("buy", "sell")
ORDER_TYPES: Final = ("limit", "market")
TIME_IN_FORCE: Final = ("GTC", "IOC", "FOK", "GTD")
STP_MODES: Final = ("cancel_oldest", "cancel_newest", "cancel_both", "decrement")
MARKET_KINDS: Final = ("binary", "scalar")
SETTABLE_STATUSES: Final = ("open", "halted", "closed")


# Written like the events (read-only ``Final`` fields, a plain ``__init__``); see events.py.


class CommandDecodeError(ValueError):
    """A WAL payload that is not a version-1 command."""


@dataclass(slots=True, init=False, unsafe_hash=True)
class CreateMarket:
    """Create a market. Binary markets ignore the bounds given and use 1..99, tick 1, settle 0|100.

    Scalar markets trade on ``price_min + k * tick_size`` up to ``price_max`` and settle at any
    grid price inside the bounds. ``multiplier_minor`` is the money, in minor units, of one
    price unit on one contract (binary default 1: a contract settles at 100 minor units).
    """

    symbol: Final[str]
    kind: Final[str]
    ts_ms: Final[int]
    tick_size: Final[int]
    price_min: Final[int]
    price_max: Final[int]
    multiplier_minor: Final[int]
    allow_short: Final[bool]
    status: Final[str]

    def __init__(
        self,
        symbol: str,
        kind: str,
        ts_ms: int,
        tick_size: int = 1,
        price_min: int = 1,
        price_max: int = 99,
        multiplier_minor: int = 1,
        allow_short: bool = True,
        status: str = "open",
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.ts_ms = ts_ms
        self.tick_size = tick_size
        self.price_min = price_min
        self.price_max = price_max
        self.multiplier_minor = multiplier_minor
        self.allow_short = allow_short
        self.status = status


@dataclass(slots=True, init=False, unsafe_hash=True)
class SetMarketStatus:
    """open <-> halted; open|halted -> closed (closing cancels every resting order)."""

    symbol: Final[str]
    status: Final[str]
    ts_ms: Final[int]

    def __init__(self, symbol: str, status: str, ts_ms: int) -> None:
        self.symbol = symbol
        self.status = status
        self.ts_ms = ts_ms


@dataclass(slots=True, init=False, unsafe_hash=True)
class ResolveMarket:
    """Cancel what rests, pay every position at ``settlement_price``; the market is settled."""

    symbol: Final[str]
    settlement_price: Final[int]
    ts_ms: Final[int]

    def __init__(self, symbol: str, settlement_price: int, ts_ms: int) -> None:
        self.symbol = symbol
        self.settlement_price = settlement_price
        self.ts_ms = ts_ms


@dataclass(slots=True, init=False, unsafe_hash=True)
class Deposit:
    """Credit free cash; the first deposit creates the account."""

    account: Final[str]
    amount_minor: Final[int]
    ts_ms: Final[int]

    def __init__(self, account: str, amount_minor: int, ts_ms: int) -> None:
        self.account = account
        self.amount_minor = amount_minor
        self.ts_ms = ts_ms


@dataclass(slots=True, init=False, unsafe_hash=True)
class Withdraw:
    """Debit free cash (never reserved cash); refused with ``insufficient_funds`` beyond it."""

    account: Final[str]
    amount_minor: Final[int]
    ts_ms: Final[int]

    def __init__(self, account: str, amount_minor: int, ts_ms: int) -> None:
        self.account = account
        self.amount_minor = amount_minor
        self.ts_ms = ts_ms


@dataclass(slots=True, init=False, unsafe_hash=True)
class PlaceOrder:
    """Submit an order. ``price`` is the limit (limit orders) or the protection price (market
    orders: the worst price it may trade at; default the market's max for buys, min for sells).

    ``server_order_id`` comes from the host (``Exchange.next_order_id``) and must rise.
    ``expire_at_ms`` only with ``time_in_force="GTD"``. ``stp`` is the self-trade prevention
    mode applied when this order would trade against its own account's resting order.
    """

    server_order_id: Final[int]
    account: Final[str]
    symbol: Final[str]
    side: Final[str]
    quantity: Final[int]
    ts_ms: Final[int]
    order_type: Final[str]
    price: Final[int | None]
    time_in_force: Final[str]
    post_only: Final[bool]
    client_order_id: Final[str | None]
    expire_at_ms: Final[int | None]
    stp: Final[str]

    def __init__(
        self,
        server_order_id: int,
        account: str,
        symbol: str,
        side: str,
        quantity: int,
        ts_ms: int,
        order_type: str = "limit",
        price: int | None = None,
        time_in_force: str = "GTC",
        post_only: bool = False,
        client_order_id: str | None = None,
        expire_at_ms: int | None = None,
        stp: str = "cancel_oldest",
    ) -> None:
        self.server_order_id = server_order_id
        self.account = account
        self.symbol = symbol
        self.side = side
        self.quantity = quantity
        self.ts_ms = ts_ms
        self.order_type = order_type
        self.price = price
        self.time_in_force = time_in_force
        self.post_only = post_only
        self.client_order_id = client_order_id
        self.expire_at_ms = expire_at_ms
        self.stp = stp


@dataclass(slots=True, init=False, unsafe_hash=True)
class CancelOrder:
    account: Final[str]
    server_order_id: Final[int]
    ts_ms: Final[int]

    def __init__(self, account: str, server_order_id: int, ts_ms: int) -> None:
        self.account = account
        self.server_order_id = server_order_id
        self.ts_ms = ts_ms


@dataclass(slots=True, init=False, unsafe_hash=True)
class ReplaceOrder:
    """Change a resting order's open quantity and/or price.

    ``quantity`` is the new *open* quantity (what may still trade). Same price and a smaller
    quantity keeps queue priority; a new price or a larger quantity re-queues the order at the
    back of its level (and it may trade at once if the new price crosses). ``price=None`` keeps
    the price.
    """

    account: Final[str]
    server_order_id: Final[int]
    quantity: Final[int]
    ts_ms: Final[int]
    price: Final[int | None]

    def __init__(
        self, account: str, server_order_id: int, quantity: int, ts_ms: int, price: int | None = None
    ) -> None:
        self.account = account
        self.server_order_id = server_order_id
        self.quantity = quantity
        self.ts_ms = ts_ms
        self.price = price


@dataclass(slots=True, init=False, unsafe_hash=True)
class ExpireOrders:
    """Expire every GTD order with ``expire_at_ms <= now_ms`` (the engine has no clock)."""

    now_ms: Final[int]

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms


@dataclass(slots=True, init=False, unsafe_hash=True)
class Notify:
    """Deliver a message on an account's private channel (alerts and notices from the API).

    It touches no book or balance; it is a command only so that it is logged like every other
    channel message and the channel's sequence numbers stay derivable from the WAL.
    ``message_json`` is a JSON object, kept as text so the command stays hashable.
    """

    account: Final[str]
    message_json: Final[str]
    ts_ms: Final[int]

    def __init__(self, account: str, message_json: str, ts_ms: int) -> None:
        self.account = account
        self.message_json = message_json
        self.ts_ms = ts_ms


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
    | Notify
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
    Notify: "nt",
}
_BY_TAG: Final[dict[str, type]] = {tag: cls for cls, tag in _TAGS.items()}
_FIELD_NAMES: Final[dict[type, tuple[str, ...]]] = {cls: tuple(f.name for f in fields(cls)) for cls in _TAGS}


# One C-level getter per class: `getattr` per field in a loop cost more than the encoding.
def _fields_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        name = names[0]
        return lambda cmd: (getattr(cmd, name),)
    getter: Callable[[Any], tuple[Any, ...]] = attrgetter(*names)
    return getter


_GETTERS: Final[dict[type, Callable[[Any], tuple[Any, ...]]]] = {
    cls: _fields_getter(names) for cls, names in _FIELD_NAMES.items()
}


def encode_command(cmd: Command) -> bytes:
    """Compact, versioned bytes for the WAL: ``[1,"po",...fields]`` as UTF-8 JSON.

    orjson, not the standard library: the host encodes every accepted command on the event
    loop thread before it is acknowledged (stdlib 4.6 us, orjson 0.6 us for an order), and
    recovery decodes every record after the snapshot. The bytes are the same JSON either way
    (compact separators, UTF-8), so logs written before the switch still decode.
    """
    cls = type(cmd)
    return orjson.dumps((COMMAND_VERSION, _TAGS[cls], *_GETTERS[cls](cmd)))


def decode_command(data: bytes) -> Command:
    """Inverse of ``encode_command``; raises ``CommandDecodeError`` on anything else."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CommandDecodeError("command payload is not JSON") from e
    if not isinstance(raw, list) or len(raw) < 2 or raw[0] != COMMAND_VERSION:
        raise CommandDecodeError("not a version-1 command record")
    tag = raw[1]
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise CommandDecodeError(f"unknown command tag {tag!r}")
    if len(raw) - 2 > len(_FIELD_NAMES[cls]):
        raise CommandDecodeError(f"wrong field count for {tag!r}")
    try:
        cmd: Command = cls(*raw[2:])
    except TypeError as e:  # too few fields (or, in the mypyc build, a field of the wrong type)
        raise CommandDecodeError(f"wrong fields for {tag!r}") from e
    return cmd
