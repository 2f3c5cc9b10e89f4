-- Watchlists, price-threshold alerts and search support (docs/specs/search.md).

-- A user's watched markets, at most 200 per user (enforced by the router under a per-user
-- advisory lock, so two concurrent adds cannot both take the last slot).
CREATE TABLE watchlist_items (
  user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  symbol     text NOT NULL REFERENCES markets (symbol),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, symbol)
);

-- "Tell me when SYMBOL trades at or above/below PRICE". `triggered_at` is set once, by a
-- conditional UPDATE ... WHERE triggered_at IS NULL (functions/alerts.py), so an alert fires
-- once however often the evaluator runs; `delivered_at` marks the outbox step done.
CREATE TABLE price_alerts (
  id                  text PRIMARY KEY CHECK (id ~ '^al-[0-9a-f]{32}$'),
  user_id             text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  symbol              text NOT NULL REFERENCES markets (symbol),
  direction           text NOT NULL CHECK (direction IN ('above', 'below')),
  price_ticks         bigint NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  triggered_at        timestamptz,
  trigger_price_ticks bigint,
  trigger_trade_id    bigint,
  delivered_at        timestamptz,
  -- failed delivery attempts; the outbox gives up at 10 (a limit on everything)
  delivery_attempts   integer NOT NULL DEFAULT 0 CHECK (delivery_attempts >= 0),
  last_delivery_error text,
  CHECK ((triggered_at IS NULL) = (trigger_price_ticks IS NULL)),
  CHECK (delivered_at IS NULL OR triggered_at IS NOT NULL)
);
CREATE INDEX price_alerts_user ON price_alerts (user_id, created_at DESC);
-- the evaluator loads the active alerts of the symbols that traded
CREATE INDEX price_alerts_active ON price_alerts (symbol) WHERE triggered_at IS NULL;
-- the delivery outbox
CREATE INDEX price_alerts_undelivered ON price_alerts (triggered_at)
  WHERE triggered_at IS NOT NULL AND delivered_at IS NULL AND delivery_attempts < 10;

-- Where the alert evaluator has got to in rm_trades (trade ids rise in the host's log order).
-- Advanced in the same transaction as the alerts it fires.
CREATE TABLE alert_cursor (
  name          text PRIMARY KEY,
  last_trade_id bigint NOT NULL CHECK (last_trade_id >= 0),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Search's `trending` sort sums recent trades per market by time window.
CREATE INDEX rm_trades_ts_for_trending ON rm_trades (ts_ms) INCLUDE (symbol, quantity);
