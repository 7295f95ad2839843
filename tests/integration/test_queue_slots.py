"""The per-user cap holds under concurrency and recovers slots of crashed jobs."""

from __future__ import annotations

import asyncio

import pytest

from contracts.ids import new_id
from terra.jobs.slots import QueueSlots
from terra.nats.provisioning import provision

pytestmark = pytest.mark.integration


@pytest.fixture
async def slots(nc) -> QueueSlots:
    await provision(nc)
    return await QueueSlots.open(nc.jetstream(), "test")


async def always_live(job_id: str) -> bool:
    return True


async def test_concurrent_claims_never_exceed_the_cap(slots):
    user = new_id()
    claims = await asyncio.gather(*(slots.claim(user, f"j{i}", 4, always_live)
                                    for i in range(10)))
    assert claims.count(True) == 4
    assert len(await slots.held(user)) == 4


async def test_released_and_dead_slots_are_reused(slots):
    user = new_id()
    for i in range(4):
        assert await slots.claim(user, f"j{i}", 4, always_live)
    assert not await slots.claim(user, "j4", 4, always_live)
    await slots.release(user, "j0")
    assert await slots.claim(user, "j4", 4, always_live)

    async def only_j4_lives(job_id: str) -> bool:
        return job_id == "j4"

    assert await slots.claim(user, "j5", 4, only_j4_lives)
    assert sorted(await slots.held(user)) == ["j4", "j5"]


async def test_claiming_twice_is_idempotent(slots):
    user = new_id()
    assert await slots.claim(user, "j", 1, always_live)
    assert await slots.claim(user, "j", 1, always_live)
    assert await slots.held(user) == ["j"]
