"""The gateway's local token check, including its cache of verified tokens."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_service.tokens import TokenIssuer
from contracts.auth import SigningKeys
from gateway.security import InvalidToken, TokenVerifier


class KeysFromIssuer:
    """Stands in for the auth service's signing-keys reply (pure data, no transport)."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self.calls = 0

    async def call(self, subject, request, reply_type):
        self.calls += 1
        return SigningKeys(issuer=self.issuer.issuer, audience=self.issuer.audience,
                           keys=self.issuer.jwks())


def make_issuer(ttl_s: int = 900) -> TokenIssuer:
    return TokenIssuer(Ed25519PrivateKey.generate(), issuer="terra-auth", audience="terra-api",
                       ttl_s=ttl_s)


async def test_a_valid_token_names_its_user_and_keys_are_fetched_once():
    issuer = make_issuer()
    keys = KeysFromIssuer(issuer)
    verifier = TokenVerifier(keys)
    for user in ("alice", "bob", "alice"):
        token = issuer.issue(user_id=user, email=f"{user}@example.com").token
        assert (await verifier.verify(token)).user_id == user
    assert keys.calls == 1


async def test_a_cached_token_is_refused_once_it_expires(monkeypatch):
    issuer = make_issuer(ttl_s=60)
    verifier = TokenVerifier(KeysFromIssuer(issuer))
    token = issuer.issue(user_id="alice", email="a@example.com").token
    assert (await verifier.verify(token)).user_id == "alice"  # now cached

    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_a_token_from_another_key_is_refused_even_with_a_known_kid():
    issuer = make_issuer()
    verifier = TokenVerifier(KeysFromIssuer(issuer))
    forger = TokenIssuer(Ed25519PrivateKey.generate(), issuer="terra-auth",
                         audience="terra-api", ttl_s=900)
    forger.kid = issuer.kid
    forged = forger.issue(user_id="alice", email="a@example.com").token
    with pytest.raises(InvalidToken):
        await verifier.verify(forged)


async def test_the_caller_carries_the_tokens_expiry_cached_or_not():
    """What a token opened (a socket) ends when it expires: the caller says when."""
    issuer = make_issuer(ttl_s=60)
    verifier = TokenVerifier(KeysFromIssuer(issuer))
    now = int(time.time())
    token = issuer.issue(user_id="alice", email="a@example.com", now=now).token
    first, cached = await verifier.verify(token), await verifier.verify(token)
    assert first.expires_at == cached.expires_at == now + 60
    assert first.issued_at == now
