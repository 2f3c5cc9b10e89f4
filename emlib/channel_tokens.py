"""Short-lived tokens that let a client join its own private realtime channel.

The functions API mints `agent:{id}` tokens for an authenticated user or agent; the
orderbook host verifies them with the same HMAC keyring (rotation included), so the host
needs no database to authorise a WebSocket subscription. Pure: the clock is passed in.

Token: `{key_id}.{agent_id}.{expires_at_s}.{hex HMAC-SHA256(secret, "ws|" + agent_id + "|" + exp)}`
"""

from __future__ import annotations

import hashlib
import hmac
import re

from emlib.signing import Keyring

TOKEN_TTL_S_MAX = 24 * 3600
_AGENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _mac(secret: bytes, agent_id: str, expires_at_s: int) -> str:
    return hmac.new(secret, f"ws|{agent_id}|{expires_at_s}".encode(), hashlib.sha256).hexdigest()


def mint_channel_token(keyring: Keyring, agent_id: str, now_s: int, ttl_s: int = 3600) -> str:
    if not _AGENT.match(agent_id):
        raise ValueError("agent id must match [A-Za-z0-9_-]{1,64}")
    ttl_s = max(1, min(ttl_s, TOKEN_TTL_S_MAX))
    key = keyring.signing_key
    expires_at_s = now_s + ttl_s
    return f"{key.id}.{agent_id}.{expires_at_s}.{_mac(key.secret, agent_id, expires_at_s)}"


def verify_channel_token(keyring: Keyring, token: str, now_s: int) -> str | None:
    """The agent id the token grants, or None (malformed, unknown key, expired, forged)."""
    # parse from the right: key ids may contain "." (agent ids, times and macs cannot)
    parts = token.rsplit(".", 3)
    if len(parts) != 4 or not parts[2].isdigit() or not _AGENT.match(parts[1]):
        return None
    key_id, agent_id, exp_text, mac = parts
    expires_at_s = int(exp_text)
    key = keyring.lookup(key_id, now_s)
    if key is None or now_s > expires_at_s or expires_at_s - now_s > TOKEN_TTL_S_MAX:
        return None
    if not hmac.compare_digest(mac, _mac(key.secret, agent_id, expires_at_s)):
        return None
    return agent_id
