"""Revoked sessions without servers: the rule (a token issued at or before its user's
revocation is refused), the bucket writes (the latest time wins), the gateway's token
check (cached tokens included, and a `sub` that is no user id), the hub ending a revoked
user's sockets, and the setting that keeps tokens shorter-lived than revocations."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from auth_service.config import AuthSettings
from auth_service.tokens import TokenIssuer
from contracts.auth import SigningKeys
from contracts.topology import REVOCATIONS_KV, revocation_key
from gateway.events import Delivered, EventHub
from gateway.security import InvalidToken, TokenVerifier
from terra.records.revocations import Revocations, is_revoked
from tests.fakes import FakeKeyValue

BAD_SUBS = ["*", ">", "a.b", "", "x" * 200, "alice bob", "a\nb"]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class KeysFromIssuer:
    """Stands in for the auth service's signing-keys reply."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer

    async def call(self, subject, request, reply_type):
        return SigningKeys(issuer=self.issuer.issuer, audience=self.issuer.audience,
                           keys=self.issuer.jwks())


class RevocationList:
    """What the gateway's watch answers, from a dict."""

    def __init__(self) -> None:
        self.times: dict[str, datetime] = {}

    async def revoked_at(self, user_id: str) -> datetime | None:
        return self.times.get(user_id)

    def known(self, user_id: str) -> datetime | None:
        return self.times.get(user_id)


def test_a_token_issued_at_or_before_the_revocation_is_refused():
    assert is_revoked(100, at(100.0)) and is_revoked(99, at(100.5))
    assert not is_revoked(101, at(100.5))  # signed in again after it
    assert not is_revoked(100, None)


async def test_revoking_keeps_the_latest_time():
    kv = FakeKeyValue(REVOCATIONS_KV.bucket)
    revocations = Revocations(kv)
    assert await revocations.revoked_at("alice") is None
    assert await revocations.revoke("alice", at(200)) == at(200)
    assert await revocations.revoke("alice", at(100)) == at(200)  # an older one loses
    assert await revocations.revoke("alice", at(300)) == at(300)
    assert await revocations.revoked_at("alice") == at(300)
    assert kv.live_keys() == [revocation_key("alice")]


async def test_concurrent_revocations_end_with_the_latest():
    revocations = Revocations(FakeKeyValue(REVOCATIONS_KV.bucket))
    times = [at(1000 + i) for i in range(20)]
    await asyncio.gather(*(revocations.revoke("alice", t) for t in reversed(times)))
    assert await revocations.revoked_at("alice") == times[-1]


def make_issuer() -> TokenIssuer:
    return TokenIssuer(Ed25519PrivateKey.generate(), issuer="terra-auth", audience="terra-api",
                       ttl_s=900)


async def test_the_gateway_refuses_tokens_issued_before_a_revocation_even_cached():
    issuer, revoked = make_issuer(), RevocationList()
    verifier = TokenVerifier(KeysFromIssuer(issuer), revocations=revoked)
    now = time.time()
    old = issuer.issue(user_id="alice", email="a@example.com", now=now - 10).token
    caller = await verifier.verify(old)  # cached from now on
    assert verifier.still_valid(caller)

    revoked.times["alice"] = at(now - 5)
    with pytest.raises(InvalidToken, match="revoked"):
        await verifier.verify(old)
    assert not verifier.still_valid(caller)
    fresh = issuer.issue(user_id="alice", email="a@example.com", now=now).token
    assert (await verifier.verify(fresh)).user_id == "alice"  # signed in after it
    other = issuer.issue(user_id="bob", email="b@example.com", now=now - 10).token
    assert (await verifier.verify(other)).user_id == "bob"


@pytest.mark.parametrize("sub", BAD_SUBS, ids=repr)
async def test_a_token_whose_subject_is_no_user_id_is_refused(sub):
    issuer = make_issuer()
    verifier = TokenVerifier(KeysFromIssuer(issuer))
    token = issuer.issue(user_id=sub, email="x@example.com").token
    with pytest.raises(InvalidToken, match="no valid user"):
        await verifier.verify(token)


def event_for(user_id: str, seq: int) -> Delivered:
    return Delivered(seq, f"terra.evt.generation.started.{user_id}",
                     b'{"type": "generation.started.v1"}')


def test_the_hub_ends_the_sockets_of_tokens_issued_up_to_a_revocation():
    hub = EventHub(nc=object(), js=object())  # never started: no broker needed
    old_socket = hub.subscribe("alice", None, issued_at=100.0)
    new_socket = hub.subscribe("alice", None, issued_at=200.0)
    rest_wait = hub.subscribe("alice", "prompt")  # a `?wait=true` request: no token time
    bobs = hub.subscribe("bob", None, issued_at=100.0)
    hub._dispatch(event_for("alice", 1))
    assert old_socket.queue.qsize() == 1

    assert hub.end_sessions("alice", issued_up_to=150.0) == 1
    assert old_socket.ended.is_set() and old_socket.queue.empty()  # its buffer dropped
    assert not new_socket.ended.is_set() and not bobs.ended.is_set()
    assert not rest_wait.ended.is_set()
    hub._dispatch(event_for("alice", 2))
    assert old_socket.queue.empty() and new_socket.queue.qsize() == 2  # no longer fed
    assert hub.sockets == 3


def test_access_tokens_may_not_outlive_their_revocation():
    keep_s = int(REVOCATIONS_KV.ttl_s)
    assert AuthSettings(access_token_ttl_s=keep_s).access_token_ttl_s == keep_s
    with pytest.raises(ValidationError, match="outlives a revocation"):
        AuthSettings(access_token_ttl_s=keep_s + 1)
    assert timedelta(seconds=AuthSettings().access_token_ttl_s) < timedelta(seconds=keep_s)
