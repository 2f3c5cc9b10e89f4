-- Durable jobs with idempotency keys (docs/specs/jobs.md). Ids come from the application.
CREATE TABLE jobs (
  id              text PRIMARY KEY,
  job_type        text NOT NULL CHECK (length(job_type) BETWEEN 1 AND 64),
  idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 256),
  request_hash    text NOT NULL CHECK (request_hash ~ '^[0-9a-f]{64}$'),
  status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts    integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
  last_error      text,
  result          jsonb,
  payload         jsonb NOT NULL,
  run_after       timestamptz NOT NULL,
  locked_by       text,
  locked_until    timestamptz,
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  -- The idempotency guarantee lives here, not in application code: concurrent
  -- duplicates meet this constraint and exactly one row wins.
  CONSTRAINT jobs_type_key UNIQUE (job_type, idempotency_key),
  CONSTRAINT jobs_lease_shape CHECK ((status = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL))
);

-- claim(): ready queued jobs per type, and running jobs whose lease may have expired.
CREATE INDEX jobs_ready ON jobs (job_type, run_after) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs (job_type, locked_until) WHERE status = 'running';
-- operators look for the dead-letter queue
CREATE INDEX jobs_dead ON jobs (job_type, updated_at) WHERE status = 'dead';
