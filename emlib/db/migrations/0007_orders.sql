-- Orders placed through the public API (functions/routers/orders.py), as their acks said.
--
-- The orderbook host is the source of truth for live state; this table remembers what the
-- host no longer tells: the request fields and the fills of a client's first order, so a
-- retried `client_order_id` can be answered with the first order once it has left the book
-- (the host then answers only "duplicate" and the first id), and `client_order_id` can be
-- shown beside open orders. Written after the host accepted; a failed write never fails the
-- order (the host already holds it). Updated by cancels made through the API.
CREATE TABLE api_order (
    server_order_id  bigint PRIMARY KEY,
    account          text NOT NULL,
    client_order_id  text,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       text NOT NULL CHECK (order_type IN ('limit', 'market')),
    price_ticks      bigint,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    time_in_force    text NOT NULL,
    post_only        boolean NOT NULL,
    expire_at_ms     bigint,
    status           text NOT NULL,
    filled_quantity  bigint NOT NULL,
    fills            jsonb NOT NULL DEFAULT '[]'::jsonb,
    sequence_number  bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX api_order_client_order_id ON api_order (account, client_order_id)
    WHERE client_order_id IS NOT NULL;
CREATE INDEX api_order_account_created ON api_order (account, created_at DESC);
