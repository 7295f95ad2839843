"""The one-training-per-user slot: a retried start of the same job finds it its own, and a
slot whose training ended without releasing it is taken over, by one claim only."""

from __future__ import annotations

import asyncio

import pytest

from contracts.ids import new_id
from terra.records.models import ModelStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def models(nc) -> ModelStore:
    return await ModelStore.open(nc.jetstream())


async def test_a_slot_held_by_the_same_job_is_ours(models):
    user = new_id()
    assert await models.claim_active(user, "job-1")
    assert await models.claim_active(user, "job-1")  # the retried request
    assert not await models.claim_active(user, "job-2")


async def test_a_slot_whose_training_ended_is_taken_by_one_claim(models):
    user = new_id()
    assert await models.claim_active(user, "ended")

    async def still_live(job_id: str) -> bool:
        return job_id != "ended"

    claims = await asyncio.gather(*(models.claim_active(user, f"new{i}", still_live)
                                    for i in range(6)))
    assert claims.count(True) == 1
    winner = f"new{claims.index(True)}"
    assert not await models.claim_active(user, "later", still_live)  # the winner is live
    await models.release_active(user, winner)
    assert await models.claim_active(user, "later", still_live)
