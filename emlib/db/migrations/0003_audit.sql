-- Append-only, hash-chained, HMAC-signed audit log (docs/specs/audit.md).
CREATE TABLE audit_events (
  id        text PRIMARY KEY,
  seq       bigint NOT NULL UNIQUE CHECK (seq >= 1),
  ts        timestamptz NOT NULL,
  actor     text NOT NULL,
  action    text NOT NULL,
  target    text NOT NULL,
  payload   jsonb NOT NULL,
  job_id    text,
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
  hash      text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  hmac      text NOT NULL CHECK (hmac ~ '^[0-9a-f]{64}$')
);
CREATE INDEX audit_events_target ON audit_events (target, seq);
CREATE INDEX audit_events_job ON audit_events (job_id) WHERE job_id IS NOT NULL;

-- The signed head checkpoint: one row, moved forward in the same transaction as each
-- insert. Appenders lock it (SELECT ... FOR UPDATE), which serialises them, so seqs
-- have no gaps and the chain has no forks. hmac is empty only at genesis (seq 0).
CREATE TABLE audit_head (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  seq       bigint NOT NULL CHECK (seq >= 0),
  hash      text NOT NULL,
  hmac      text NOT NULL
);
INSERT INTO audit_head (seq, hash, hmac) VALUES (0, repeat('0', 64), '');

-- Database-level guards. They stop mistakes and casual edits; an owner or superuser can
-- still disable them, which is what the hash chain, the HMAC and the head are for.
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION audit_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  head_seq bigint;
  head_hash text;
BEGIN
  SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE singleton FOR UPDATE;
  IF NOT FOUND OR NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
    RAISE EXCEPTION 'audit insert does not extend the head (seq %, head %)', NEW.seq, head_seq
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;

CREATE FUNCTION audit_check_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'audit head: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.seq <> OLD.seq + 1
     OR NOT EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq AND hash = NEW.hash) THEN
    RAISE EXCEPTION 'audit head may only move to the event just appended'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_extend_head BEFORE INSERT ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_check_insert();
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head
  FOR EACH ROW EXECUTE FUNCTION audit_check_head();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
