"""The shared sliding-window limit (`terra.records.rate_limits`) over an in-memory bucket: bursts,
several processes on one bucket, Retry-After, and a full key not read again meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from terra.records.rate_limits import RateLimitExceeded, SlidingWindowLimit, Window
from tests.fakes import FakeKeyValue


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def outcomes(limit: SlidingWindowLimit, key: str, n: int) -> list[int | None]:
    """None for each admission, the Retry-After of each refusal."""

    async def one() -> int | None:
        try:
            await limit.admit(key)
        except RateLimitExceeded as exc:
            return exc.retry_after_s
        return None

    return await asyncio.gather(*(one() for _ in range(n)))


async def test_a_burst_gets_the_limit_and_the_rest_a_retry_after():
    clock = Clock()
    limit = SlidingWindowLimit(FakeKeyValue(), Window(10, 60.0), clock=clock)
    results = await outcomes(limit, "prompt.alice", 50)
    assert results.count(None) == 10
    assert {r for r in results if r is not None} == {60}
    assert await outcomes(limit, "prompt.bob", 3) == [None] * 3  # another key: unaffected

    clock.now += 61
    assert (await outcomes(limit, "prompt.alice", 11)).count(None) == 10


async def test_processes_sharing_a_bucket_share_the_limit():
    kv, clock = FakeKeyValue(), Clock()
    gateways = [SlidingWindowLimit(kv, Window(10, 60.0), clock=clock) for _ in range(3)]
    results = await asyncio.gather(*(outcomes(g, "prompt.alice", 30) for g in gateways))
    assert sum(r.count(None) for r in results) == 10


async def test_retry_after_is_when_the_oldest_admission_leaves_the_window():
    clock = Clock()
    limit = SlidingWindowLimit(FakeKeyValue(), Window(2, 60.0), clock=clock)
    await limit.admit("k")
    clock.now += 20
    await limit.admit("k")
    clock.now += 10
    with pytest.raises(RateLimitExceeded) as refused:
        await limit.admit("k")
    assert refused.value.retry_after_s == 30
    clock.now += 30
    await limit.admit("k")


async def test_a_key_known_full_is_refused_without_reading_the_bucket_again():
    kv, clock = FakeKeyValue(), Clock()
    limit = SlidingWindowLimit(kv, Window(1, 60.0), clock=clock)
    await limit.admit("k")
    with pytest.raises(RateLimitExceeded):
        await limit.admit("k")
    reads = len(kv.ops)
    for _ in range(100):
        with pytest.raises(RateLimitExceeded):
            await limit.admit("k")
    assert len(kv.ops) == reads
    assert limit._locks == {}  # no lock left behind for idle keys
