from __future__ import annotations

import pytest

from emlib.channel_tokens import TOKEN_TTL_S_MAX, mint_channel_token, verify_channel_token
from emlib.settings import HmacKey
from emlib.signing import Keyring

OLD = HmacKey(id="svc.v1", secret="a" * 32, created_at_s=0)
NEW = HmacKey(id="svc.v2", secret="b" * 32, created_at_s=1_000)


def test_round_trip_with_dotted_key_ids() -> None:
    ring = Keyring([OLD, NEW])
    token = mint_channel_token(ring, "agent-7", now_s=2_000, ttl_s=60)
    assert token.startswith("svc.v2.")
    assert verify_channel_token(ring, token, now_s=2_030) == "agent-7"


def test_expired_forged_and_unknown_tokens_grant_nothing() -> None:
    ring = Keyring([NEW])
    token = mint_channel_token(ring, "agent-7", now_s=2_000, ttl_s=60)
    assert verify_channel_token(ring, token, now_s=2_061) is None
    forged = token.replace("agent-7", "agent-8")
    assert verify_channel_token(ring, forged, now_s=2_010) is None
    assert verify_channel_token(Keyring([OLD]), token, now_s=2_010) is None
    assert verify_channel_token(ring, "garbage", now_s=2_010) is None


def test_a_token_from_a_rotated_key_works_for_the_overlap_only() -> None:
    token = mint_channel_token(Keyring([OLD]), "agent-7", now_s=1_000, ttl_s=TOKEN_TTL_S_MAX)
    ring = Keyring([OLD, NEW])
    assert verify_channel_token(ring, token, now_s=1_000 + 3_600) == "agent-7"
    assert verify_channel_token(ring, token, now_s=1_000 + 86_400 + 1) is None


def test_bad_agent_ids_are_refused_when_minting() -> None:
    with pytest.raises(ValueError):
        mint_channel_token(Keyring([NEW]), "agent.7", now_s=0)
