-- The read model: the orderbook host's event stream projected into PostgreSQL by
-- functions/projector.py (docs/specs/read_model.md). The host is the source of truth; every
-- rm_* table can be truncated and rebuilt from the host's log (`python -m functions.projector
-- rebuild`). Prices are integer ticks, money integer minor units, times unix milliseconds.

-- Where each projector has got to: the last applied wal_seq. Advanced in the same transaction
-- as the rows it covers, so a crash never leaves rows without their cursor (or the reverse).
CREATE TABLE rm_cursor (
    projector    text PRIMARY KEY,
    last_wal_seq bigint NOT NULL CHECK (last_wal_seq >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Per-symbol facts the other views need: the contract's size and bounds (to mark positions to
-- market), the status, the last trade and running totals.
CREATE TABLE rm_markets (
    symbol               text PRIMARY KEY,
    kind                 text NOT NULL,
    tick_size            bigint NOT NULL,
    price_min            bigint NOT NULL,
    price_max            bigint NOT NULL,
    settle_max           bigint NOT NULL,
    multiplier_minor     bigint NOT NULL,
    status               text NOT NULL,
    settlement_price     bigint,
    last_price           bigint,
    last_trade_id        bigint,
    last_trade_ts_ms     bigint,
    volume               bigint NOT NULL DEFAULT 0,
    trade_count          bigint NOT NULL DEFAULT 0,
    created_wal_seq      bigint NOT NULL
);

CREATE TABLE rm_orders (
    server_order_id  bigint PRIMARY KEY,
    account          text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    type             text NOT NULL,
    time_in_force    text NOT NULL,
    price            bigint NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity >= 0),   -- filled + remaining (a replace changes it)
    filled           bigint NOT NULL DEFAULT 0 CHECK (filled >= 0),
    remaining        bigint NOT NULL CHECK (remaining >= 0),
    status           text NOT NULL
        CHECK (status IN ('open', 'partially_filled', 'filled', 'cancelled')),
    client_order_id  text,
    created_ts_ms    bigint NOT NULL,
    updated_ts_ms    bigint NOT NULL,
    created_wal_seq  bigint NOT NULL,
    updated_wal_seq  bigint NOT NULL
);
CREATE INDEX rm_orders_account ON rm_orders (account, server_order_id DESC);
CREATE INDEX rm_orders_open ON rm_orders (account) WHERE status IN ('open', 'partially_filled');

CREATE TABLE rm_trades (
    trade_id        bigint PRIMARY KEY,
    symbol          text NOT NULL,
    price           bigint NOT NULL,
    quantity        bigint NOT NULL CHECK (quantity > 0),
    taker_side      text NOT NULL CHECK (taker_side IN ('buy', 'sell')),
    maker_order_id  bigint NOT NULL,
    taker_order_id  bigint NOT NULL,
    maker_account   text NOT NULL,
    taker_account   text NOT NULL,
    ts_ms           bigint NOT NULL,
    wal_seq         bigint NOT NULL
);
CREATE INDEX rm_trades_symbol ON rm_trades (symbol, trade_id DESC);

-- One row per side of a trade: an account's own view ("my fills").
CREATE TABLE rm_fills (
    trade_id         bigint NOT NULL,
    liquidity        text NOT NULL CHECK (liquidity IN ('maker', 'taker')),
    account          text NOT NULL,
    server_order_id  bigint NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    price            bigint NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    ts_ms            bigint NOT NULL,
    PRIMARY KEY (trade_id, liquidity)
);
CREATE INDEX rm_fills_account ON rm_fills (account, trade_id DESC);

-- Latest state per (account, symbol); a row disappears when everything is back to zero.
CREATE TABLE rm_positions (
    account          text NOT NULL,
    symbol           text NOT NULL,
    position         bigint NOT NULL,          -- long - short
    long_quantity    bigint NOT NULL CHECK (long_quantity >= 0),
    short_quantity   bigint NOT NULL CHECK (short_quantity >= 0),
    locked_quantity  bigint NOT NULL CHECK (locked_quantity >= 0),
    updated_wal_seq  bigint NOT NULL,
    PRIMARY KEY (account, symbol)
);

CREATE TABLE rm_balances (
    account          text PRIMARY KEY,
    cash_minor       bigint NOT NULL CHECK (cash_minor >= 0),
    reserved_minor   bigint NOT NULL CHECK (reserved_minor >= 0),
    updated_wal_seq  bigint NOT NULL
);

-- OHLCV per UTC bucket. bucket_start_ms is the bucket's first millisecond.
CREATE TABLE rm_candles (
    symbol           text NOT NULL,
    interval         text NOT NULL CHECK (interval IN ('1m', '1h', '1d')),
    bucket_start_ms  bigint NOT NULL,
    open             bigint NOT NULL,
    high             bigint NOT NULL,
    low              bigint NOT NULL,
    close            bigint NOT NULL,
    volume           bigint NOT NULL CHECK (volume > 0),
    trade_count      bigint NOT NULL CHECK (trade_count > 0),
    PRIMARY KEY (symbol, interval, bucket_start_ms)
);

-- The daily leaderboard's baseline: each account's net worth when the stream first crossed
-- into `day` (UTC), plus money moved in or out (deposits, withdrawals) during that day, so a
-- deposit is not counted as a gain.
CREATE TABLE rm_networth_daily (
    day             date NOT NULL,
    account         text NOT NULL,
    baseline_minor  bigint NOT NULL,
    flows_minor     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, account)
);
-- The last UTC day the projector has taken a baseline for (one row per projector).
CREATE TABLE rm_networth_day (
    projector  text PRIMARY KEY,
    day        date NOT NULL
);
