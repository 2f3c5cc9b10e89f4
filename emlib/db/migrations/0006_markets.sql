-- Markets and their lifecycle (design.md §5, contract.md "Markets", docs/specs/admin_actions.md).
--
-- A market row is born from a user's request (status `requested`) and moves only through
-- admin actions, each of which commits together with its hash-chained audit event and a
-- `market_events` timeline row. The orderbook host is the source of truth for books and
-- balances; this table holds what the host does not know (taxonomy, texts, approvals).
CREATE TABLE markets (
  symbol                  text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9][A-Z0-9-]{0,31}$'),
  title                   text NOT NULL CHECK (char_length(title) BETWEEN 3 AND 200),
  description             text NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
  type                    text NOT NULL CHECK (type IN
                            ('political', 'economic', 'social', 'technology', 'finance', 'culture', 'sports')),
  subtype                 text NOT NULL DEFAULT '' CHECK (char_length(subtype) <= 64),
  region                  text NOT NULL DEFAULT '' CHECK (char_length(region) <= 64),
  -- Human-assigned at approval; NULL while requested (or when rejected before approval).
  risk_level              text CHECK (risk_level IN ('low', 'medium', 'high')),
  kind                    text NOT NULL CHECK (kind IN ('binary', 'scalar')),
  tick_size               bigint NOT NULL CHECK (tick_size >= 1),
  price_min               bigint NOT NULL CHECK (price_min >= 0),
  price_max               bigint NOT NULL CHECK (price_max <= 1000000000),
  multiplier_minor        bigint NOT NULL DEFAULT 1 CHECK (multiplier_minor BETWEEN 1 AND 1000000),
  status                  text NOT NULL DEFAULT 'requested' CHECK (status IN
                            ('requested', 'approved', 'open', 'halted', 'closed', 'resolved', 'settled', 'rejected')),
  created_by              text NOT NULL,
  -- The audit event of the approval that created the market on the host (the second one
  -- for political markets). Set exactly when the market left `requested` for `approved`.
  human_approval_audit_id text REFERENCES audit_events (id),
  sources                 text[] NOT NULL DEFAULT '{}' CHECK (cardinality(sources) <= 10),
  resolution_criteria     text NOT NULL CHECK (char_length(resolution_criteria) <= 2000),
  settlement_price        bigint,
  -- Symbols of markets whose titles looked the same when this one was requested.
  possible_duplicate_of   text[] NOT NULL DEFAULT '{}',
  -- Written by the read-model projector (functions/projector.py) from the host's trades:
  -- contracts traded all time, and the time of the last trade. Nothing else writes them.
  volume                  bigint NOT NULL DEFAULT 0 CHECK (volume >= 0),
  last_trade_at           timestamptz,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  -- Duplicate detection: the title lower-cased with punctuation folded to single spaces,
  -- and its English lexemes (word overlap is computed against these).
  title_norm              text GENERATED ALWAYS AS
                            (btrim(regexp_replace(lower(title), '[^[:alnum:]]+', ' ', 'g'))) STORED,
  title_lexemes           text[] GENERATED ALWAYS AS
                            (tsvector_to_array(to_tsvector('english'::regconfig, title))) STORED,
  -- Full-text search (the search router queries it): title weighs most, then subtype and
  -- region, then the description.
  search_vector           tsvector GENERATED ALWAYS AS (
                            setweight(to_tsvector('english'::regconfig, title), 'A')
                            || setweight(to_tsvector('english'::regconfig, subtype || ' ' || region), 'B')
                            || setweight(to_tsvector('english'::regconfig, description), 'C')) STORED,
  CHECK (price_min < price_max),
  CHECK ((price_max - price_min) % tick_size = 0),
  CHECK (kind = 'scalar' OR (tick_size = 1 AND price_min = 1 AND price_max = 99)),
  CHECK (status IN ('requested', 'rejected') OR (risk_level IS NOT NULL AND human_approval_audit_id IS NOT NULL)),
  CHECK ((status = 'settled') = (settlement_price IS NOT NULL))
);
CREATE INDEX markets_search ON markets USING gin (search_vector);
CREATE INDEX markets_title_lexemes ON markets USING gin (title_lexemes);
CREATE INDEX markets_title_norm ON markets (title_norm);
CREATE INDEX markets_status_created ON markets (status, created_at DESC, symbol DESC);
CREATE INDEX markets_created ON markets (created_at DESC, symbol DESC);
CREATE INDEX markets_type_region ON markets (type, region);
CREATE INDEX markets_volume ON markets (volume DESC);
CREATE INDEX markets_last_trade ON markets (last_trade_at DESC NULLS LAST);
CREATE INDEX markets_created_by ON markets (created_by, status);

-- One row per admin approval. Political markets need two rows from different admins
-- before the market is created; the primary key makes "the same admin twice" impossible.
CREATE TABLE market_approvals (
  symbol         text NOT NULL REFERENCES markets (symbol),
  admin_id       text NOT NULL,
  audit_event_id text NOT NULL REFERENCES audit_events (id),
  risk_level     text NOT NULL CHECK (risk_level IN ('low', 'medium', 'high')),
  params         jsonb NOT NULL DEFAULT '{}',
  ts             timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (symbol, admin_id)
);

-- The timeline: every request, approval and status change, in order.
CREATE TABLE market_events (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  symbol         text NOT NULL REFERENCES markets (symbol),
  event          text NOT NULL CHECK (event IN
                   ('requested', 'approval_recorded', 'approved', 'rejected', 'opened', 'halted',
                    'closed', 'resolved', 'settled')),
  from_status    text,
  to_status      text NOT NULL,
  actor          text NOT NULL,
  reason         text NOT NULL DEFAULT '',
  -- NULL only for `requested` (a user's request is not an admin decision).
  audit_event_id text REFERENCES audit_events (id),
  detail         jsonb NOT NULL DEFAULT '{}',
  ts             timestamptz NOT NULL DEFAULT now(),
  CHECK (event = 'requested' OR audit_event_id IS NOT NULL)
);
CREATE INDEX market_events_symbol ON market_events (symbol, id);
