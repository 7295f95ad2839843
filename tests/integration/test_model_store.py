"""Model records by owner, and the one-training-per-user slot."""

from __future__ import annotations

import asyncio

import pytest

from contracts.ids import new_id
from contracts.training import ModelRecord, ModelStatus
from terra.nats.provisioning import provision
from terra.records.models import ModelStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def models(nc) -> ModelStore:
    await provision(nc)
    return await ModelStore.open(nc.jetstream())


async def test_a_user_lists_only_their_own_models_newest_first(models):
    alice, bob = new_id(), new_id()
    assert await models.list(alice) == []
    first = ModelRecord(model_id=new_id(), user_id=alice, trigger_word="zqx")
    await models.create(first)
    second = ModelRecord(model_id=new_id(), user_id=alice, trigger_word="vbn")
    await models.create(second)
    await models.create(ModelRecord(model_id=new_id(), user_id=bob, trigger_word="brr"))
    assert [m.model_id for m in await models.list(alice)] == [second.model_id, first.model_id]
    await models.delete(alice, first.model_id)
    assert [m.model_id for m in await models.list(alice)] == [second.model_id]
    assert await models.get(bob, second.model_id) is None


async def test_one_training_slot_per_user_even_under_concurrency(models):
    user = new_id()
    claims = await asyncio.gather(*(models.claim_active(user, f"job{i}") for i in range(8)))
    assert claims.count(True) == 1
    winner = f"job{claims.index(True)}"
    await models.release_active(user, "someone-else")  # not the holder: no effect
    assert not await models.claim_active(user, "late")
    await models.release_active(user, winner)
    assert await models.claim_active(user, "next")


async def test_updates_are_revision_checked(models):
    record = ModelRecord(model_id=new_id(), user_id=new_id(), trigger_word="zqx")
    await models.create(record)
    updated = await models.update(record.user_id, record.model_id,
                                  lambda m: m.model_copy(update={"status": ModelStatus.READY}))
    assert updated.status is ModelStatus.READY
    assert (await models.get(record.user_id, record.model_id)).status is ModelStatus.READY
