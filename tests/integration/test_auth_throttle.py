"""Login throttling against a real LOGIN_THROTTLE_KV bucket."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from auth_service.domain import RateLimited
from auth_service.throttle import LoginThrottle
from contracts.topology import LOGIN_THROTTLE_KV
from terra.provisioning import provision

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kv(nc):
    await provision(nc, streams=(), kv_buckets=(LOGIN_THROTTLE_KV,))
    return await nc.jetstream().key_value(LOGIN_THROTTLE_KV.bucket)


def email() -> str:
    return f"t-{uuid.uuid4().hex[:10]}@example.com"


def address() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


async def test_the_email_limit_blocks_until_the_window_moves_on(kv):
    clock = Clock()
    throttle = LoginThrottle(kv, window_s=600, max_per_email=3, max_per_address=100, clock=clock)
    who = email()
    for _ in range(3):
        await throttle.check(who, None)
        await throttle.record_failure(who, None)
        clock.now += 10
    with pytest.raises(RateLimited) as caught:
        await throttle.check(who, None)
    assert caught.value.retry_after_s == 600 - 30
    clock.now += 600 - 30
    await throttle.check(who, None)


async def test_the_address_limit_spans_emails(kv):
    throttle = LoginThrottle(kv, window_s=600, max_per_email=100, max_per_address=4)
    where = address()
    for _ in range(4):
        await throttle.record_failure(email(), where)
    with pytest.raises(RateLimited):
        await throttle.check(email(), where)
    await throttle.check(email(), address())


async def test_concurrent_failures_are_all_counted(kv):
    throttle = LoginThrottle(kv, window_s=600, max_per_email=50, max_per_address=50)
    who = email()
    await asyncio.gather(*[throttle.record_failure(who, None) for _ in range(12)])
    strict = LoginThrottle(kv, window_s=600, max_per_email=12, max_per_address=50)
    with pytest.raises(RateLimited):
        await strict.check(who, None)
    lenient = LoginThrottle(kv, window_s=600, max_per_email=13, max_per_address=50)
    await lenient.check(who, None)


async def test_clearing_forgives_the_email(kv):
    throttle = LoginThrottle(kv, window_s=600, max_per_email=1, max_per_address=50)
    who = email()
    await throttle.record_failure(who, None)
    with pytest.raises(RateLimited):
        await throttle.check(who, None)
    await throttle.clear(who)
    await throttle.check(who, None)
    await throttle.record_failure(who, None)  # counting starts again after a delete marker
    with pytest.raises(RateLimited):
        await throttle.check(who, None)
