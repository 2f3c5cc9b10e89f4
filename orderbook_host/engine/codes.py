"""Stable result codes returned by the engine instead of exceptions.

Every expected refusal is a value: ``Outcome.code`` holds one of the strings below and the
events carry an ``order_rejected`` (or nothing, for non-order commands). Clients switch on
these strings, so they never change meaning; new codes may be added. The host maps each to an
HTTP status in one place (suggested status in brackets).

unknown_symbol [404]
    The command names a symbol that no ``CreateMarket`` created.
unknown_account [404]
    The account has never received a ``Deposit`` (accounts are created by their first deposit).
market_exists [409]
    ``CreateMarket`` for a symbol that already exists (any status, settled included).
invalid_market [422]
    ``CreateMarket`` with a bad symbol (``[A-Z0-9][A-Z0-9-]{0,31}``), kind, bounds, tick size
    or multiplier.
market_not_open [409]
    Order, cancel or replace on a market that is halted, closed or settled. Cancels are allowed
    while halted (a halt freezes matching, not the right to withdraw an order).
invalid_status_transition [409]
    ``SetMarketStatus``/``ResolveMarket`` not allowed from the current status
    (open <-> halted, open|halted -> closed, any unsettled -> settled by resolution).
invalid_price [422]
    Limit price off the tick grid or outside ``[price_min, price_max]``; a protection price of a
    market order likewise; a settlement price outside the market's settlement range (binary: 0
    or 100; scalar: on the grid within the bounds).
invalid_quantity [422]
    Quantity not a positive integer (or above ``QUANTITY_MAX``); a replace to zero quantity.
invalid_amount [422]
    Deposit/withdrawal amount not a positive integer (or above ``AMOUNT_MAX_MINOR``).
invalid_order [422]
    A combination that makes no sense: market order that is GTC/GTD or post-only, post-only
    with IOC/FOK, unknown side/type/time-in-force/self-trade mode.
invalid_expiry [422]
    GTD without ``expire_at_ms``, GTD already expired at ``ts_ms``, or ``expire_at_ms`` given
    for another time in force.
invalid_order_id [409]
    ``server_order_id`` not greater than every id the engine has seen (ids must rise; the host
    takes ``Exchange.next_order_id``).
insufficient_funds [422]
    Free cash below what the order could cost (buy: limit or protection price x quantity; short
    sell: collateral), or a withdrawal above free cash.
insufficient_position [422]
    Sell beyond the free position on a market that does not allow shorting.
post_only_would_cross [409]
    A post-only order (or a replace of one) would take liquidity.
fok_not_fillable [409]
    A fill-or-kill order cannot be filled completely right now; nothing happened.
order_not_open [409]
    Cancel/replace of an order that is unknown, filled, cancelled or expired.
not_owner [403]
    Cancel/replace of another account's order.
invalid_message [422]
    ``Notify`` whose message is not a JSON object of at most ``MESSAGE_BYTES_MAX`` bytes.
"""

from __future__ import annotations

from typing import Final

UNKNOWN_SYMBOL: Final = "unknown_symbol"
UNKNOWN_ACCOUNT: Final = "unknown_account"
MARKET_EXISTS: Final = "market_exists"
INVALID_MARKET: Final = "invalid_market"
MARKET_NOT_OPEN: Final = "market_not_open"
INVALID_STATUS_TRANSITION: Final = "invalid_status_transition"
INVALID_PRICE: Final = "invalid_price"
INVALID_QUANTITY: Final = "invalid_quantity"
INVALID_AMOUNT: Final = "invalid_amount"
INVALID_ORDER: Final = "invalid_order"
INVALID_EXPIRY: Final = "invalid_expiry"
INVALID_ORDER_ID: Final = "invalid_order_id"
INSUFFICIENT_FUNDS: Final = "insufficient_funds"
INSUFFICIENT_POSITION: Final = "insufficient_position"
POST_ONLY_WOULD_CROSS: Final = "post_only_would_cross"
FOK_NOT_FILLABLE: Final = "fok_not_fillable"
ORDER_NOT_OPEN: Final = "order_not_open"
NOT_OWNER: Final = "not_owner"
INVALID_MESSAGE: Final = "invalid_message"

ALL_CODES: Final = (
    UNKNOWN_SYMBOL,
    UNKNOWN_ACCOUNT,
    MARKET_EXISTS,
    INVALID_MARKET,
    MARKET_NOT_OPEN,
    INVALID_STATUS_TRANSITION,
    INVALID_PRICE,
    INVALID_QUANTITY,
    INVALID_AMOUNT,
    INVALID_ORDER,
    INVALID_EXPIRY,
    INVALID_ORDER_ID,
    INSUFFICIENT_FUNDS,
    INSUFFICIENT_POSITION,
    POST_ONLY_WOULD_CROSS,
    FOK_NOT_FILLABLE,
    ORDER_NOT_OPEN,
    NOT_OWNER,
    INVALID_MESSAGE,
)
