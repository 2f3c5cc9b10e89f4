-- The key-value port on PostgreSQL (emlib/kv/postgres.py): nonce cache, counters, small
-- hot values, and token-bucket rate limits. Used when Upstash Redis is not configured.
-- A row past expires_at reads as absent; purge_expired() deletes such rows in bulk.
CREATE TABLE kv_entry (
    key        text PRIMARY KEY,
    value      bytea NOT NULL,
    expires_at timestamptz
);
CREATE INDEX kv_entry_expires_at ON kv_entry (expires_at) WHERE expires_at IS NOT NULL;

-- GCRA token buckets (see emlib/kv/base.py): one integer per bucket, the theoretical
-- arrival time in microseconds of the caller's clock. `allowed` is the outcome of the
-- last step, so one UPSERT can both update the bucket and report its decision.
CREATE TABLE kv_token_bucket (
    key     text PRIMARY KEY,
    tat_us  bigint NOT NULL,
    allowed boolean NOT NULL
);
