-- Users, their password hashes and second factors (docs/specs/auth.md).
-- `id` is also the user's account id on the orderbook host (`u-` + 32 hex), so it must
-- match the host's account pattern and never be reused. Usernames are unique without
-- regard to case. TOTP secrets are stored encrypted (AES-GCM, see functions/auth.py),
-- and never returned after enrolment.
CREATE TABLE users (
  id               text PRIMARY KEY CHECK (id ~ '^u-[0-9a-f]{32}$'),
  username         text NOT NULL CHECK (username ~ '^[A-Za-z0-9_-]{3,32}$'),
  -- NULL for users who sign in only through an outside identity provider (RS256 mode)
  password_hash    text,
  role             text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin', 'super_admin')),
  kind             text NOT NULL DEFAULT 'user' CHECK (kind IN ('user')),
  -- `sub` of an outside identity provider's tokens (e.g. Cognito), when linked
  external_subject text UNIQUE,
  totp_secret_enc  text,
  -- written by enrol, moved to totp_secret_enc by a confirmed code
  totp_pending_enc text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_ci ON users (lower(username));

-- One row per accepted TOTP code (its 30 s time step), so a code is accepted once:
-- an intercepted or shoulder-surfed code cannot be replayed within its window.
-- Rows older than the accepted window are deleted as new codes are used.
CREATE TABLE totp_uses (
  user_id  text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  timecode bigint NOT NULL,
  used_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, timecode)
);
