"""Throttled sign-in through the gateway: a 429 problem with Retry-After for the guessing
network, while the owner still gets in from elsewhere.

The limits themselves are checked in tests/integration/test_auth_throttle.py; here the
session's auth_service (default per-pair limit) answers a gateway that trusts
X-Forwarded-For, so one test can speak from several client networks."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.e2e.client import PASSWORD

pytestmark = pytest.mark.e2e

PAIR_LIMIT = 5  # TERRA_LOGIN_MAX_FAILURES_PER_EMAIL's default; the session leaves it


@pytest.fixture(scope="module")
def proxied_url(stack) -> str:
    """A gateway behind a (pretend) proxy: the client address is the X-Forwarded-For hop."""
    return stack.start_gateway(TERRA_TRUST_FORWARDED_FOR="true")


@pytest.fixture
async def proxied(proxied_url):
    async with httpx.AsyncClient(base_url=proxied_url, timeout=15) as client:
        yield client


def network() -> dict[str, str]:
    """Headers that speak from a client network of this test's own (a random IPv6 /64)."""
    return {"X-Forwarded-For": f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:"
                               f"{uuid.uuid4().int % 0xFFFF:x}::1"}


async def test_guessing_one_account_is_a_429_with_retry_after_and_the_owner_gets_in(proxied):
    email = f"owner-{uuid.uuid4().hex[:10]}@example.com"
    created = await proxied.post("/api/auth/register", headers=network(),
                                 json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text

    attacker = network()
    guesses = await asyncio.gather(*[
        proxied.post("/api/auth/login", headers=attacker,
                     json={"email": email, "password": f"guess number {i}!"})
        for i in range(12)
    ])
    statuses = sorted(r.status_code for r in guesses)
    assert statuses == [401] * PAIR_LIMIT + [429] * (12 - PAIR_LIMIT), statuses
    for refused in (r for r in guesses if r.status_code == 429):
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
        body = refused.json()
        assert body["status"] == 429 and body["code"] == "rate_limited", body

    # The guessing network stays refused, even with the right password...
    right = {"email": email, "password": PASSWORD}
    assert (await proxied.post("/api/auth/login", headers=attacker, json=right)).status_code == 429
    # ...but knowing the email does not lock its owner out from anywhere else.
    owner = await proxied.post("/api/auth/login", headers=network(), json=right)
    assert owner.status_code == 200, owner.text
    assert owner.json()["user"]["email"] == email
