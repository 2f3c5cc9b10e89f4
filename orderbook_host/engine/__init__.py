"""Pure matching engine and accounts/risk ledger of the orderbook host.

Problem solved: one deterministic state machine that owns books, accounts and reservations for
a shard of symbols. It imports only the standard library, reads no clock and does no I/O: every
outside value (ids, times) arrives inside a command, and every effect leaves as an event. The
host WALs ``encode_command(cmd)``, calls ``apply(cmd)``, publishes the events and answers with
the ack; recovery is ``Exchange.restore(snapshot)`` plus replay of the WAL tail, checked with
``state_hash()``.

Driving it::

    ex = Exchange()
    ex.apply(CreateMarket("US-CPI-2026-12", "binary", ts_ms=0))
    ex.apply(Deposit("alice", 10_000, ts_ms=0))
    out = ex.apply(PlaceOrder(ex.next_order_id, "alice", "US-CPI-2026-12", "buy", 10, ts_ms=1,
                              price=42, client_order_id="abc-1"))
    out.code            # None, or a reject code from ``codes``
    out.ack             # OrderAck: server_order_id, client_order_id, status, filled_quantity, fills
    out.events          # [OrderAccepted, BookLevel, BalanceChanged, ...]; e.to_payload() -> dict

Commands (``commands.py``): CreateMarket, SetMarketStatus, ResolveMarket, Deposit, Withdraw, Notify,
PlaceOrder, CancelOrder, ReplaceOrder, ExpireOrders. ``encode_command``/``decode_command`` give
the WAL bytes (versioned compact JSON arrays).

Outcome (``results.py``): ``events``, ``code`` and ``ack`` (PlaceOrder, CancelOrder,
ReplaceOrder when accepted; PlaceOrder always, with ``status="rejected"`` and ``code`` on a
reject, or ``status="duplicate"``/``duplicate=True`` and the first ``server_order_id`` when the
account reuses a ``client_order_id`` of an accepted order; rejected orders do not claim the
id).

Events (``events.py``): market_created, market_status, market_settled, order_accepted,
order_rejected, order_duplicate, trade, order_cancelled (reason user | ioc_remainder | stp |
expired | market_closed), order_replaced, book, balance, position.

Codes (``codes.py``): each documented there, with a suggested HTTP status.

Reads for the API: ``book_levels(symbol, depth)``, ``market(symbol)`` (status, config, last
trade), ``account(account_id)``, ``open_orders(account_id)``, ``get_order(server_order_id)``,
``lookup_client_order(account_id, client_order_id)``, ``next_order_id``.

State: ``snapshot() -> bytes`` (whole state: books in priority order, accounts, positions,
dedup tables, markets, counters), ``Exchange.restore(bytes)`` and ``state_hash()`` (sha256 of the
canonical snapshot; equal states hash equal regardless of history).

Speed: the modules are plain typed Python (~160k commands/s on one core in ``bench.matching``)
and also compile unchanged with mypyc (~500k/s): ``scripts/build_engine.py`` puts ``.so`` files
next to the sources, which Python then imports instead; ``--clean`` removes them. Commands,
events and acks are slotted dataclasses with ``Final`` fields (mypy refuses writes; compiled,
the fields are read-only at run time too); see ``events.py`` for why they are not frozen.

Rules worth knowing: trades execute at the resting order's price; market orders are IOC/FOK
with a protection price (default price_max for buys, price_min for sells); self-trade mode is
the taker's (default cancel_oldest); cancels are allowed while a market is halted; a replace
that moves the price or raises the quantity re-queues and may trade at once (self-trade mode
cancel_oldest). See ``exchange.py`` for the money model.
"""

from orderbook_host.engine import codes
from orderbook_host.engine.book import BUY, SELL
from orderbook_host.engine.commands import (
    CancelOrder,
    Command,
    CommandDecodeError,
    CreateMarket,
    Deposit,
    ExpireOrders,
    Notify,
    PlaceOrder,
    ReplaceOrder,
    ResolveMarket,
    SetMarketStatus,
    Withdraw,
    decode_command,
    encode_command,
)
from orderbook_host.engine.events import (
    BalanceChanged,
    BookLevel,
    Event,
    MarketCreated,
    MarketSettled,
    MarketStatusChanged,
    Notice,
    OrderAccepted,
    OrderCancelled,
    OrderDuplicate,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
    Trade,
)
from orderbook_host.engine.exchange import AMOUNT_MAX_MINOR, QUANTITY_MAX, Exchange
from orderbook_host.engine.results import Fill, OrderAck, Outcome

__all__ = [
    "AMOUNT_MAX_MINOR",
    "BUY",
    "QUANTITY_MAX",
    "SELL",
    "BalanceChanged",
    "BookLevel",
    "CancelOrder",
    "Command",
    "CommandDecodeError",
    "CreateMarket",
    "Deposit",
    "Event",
    "Exchange",
    "ExpireOrders",
    "Fill",
    "MarketCreated",
    "MarketSettled",
    "MarketStatusChanged",
    "Notice",
    "Notify",
    "OrderAccepted",
    "OrderAck",
    "OrderCancelled",
    "OrderDuplicate",
    "OrderRejected",
    "OrderReplaced",
    "Outcome",
    "PlaceOrder",
    "PositionChanged",
    "ReplaceOrder",
    "ResolveMarket",
    "SetMarketStatus",
    "Trade",
    "Withdraw",
    "codes",
    "decode_command",
    "encode_command",
]
