"""Photo sets past their retention that no model needs are deleted by trainer_service's
sweep, against the session's S3 and NATS; the models are read as the trainer reads them
(its own credential: a watch over the whole models bucket)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from contracts.base import utcnow
from contracts.ids import new_id
from contracts.topology import OBJECTS, TRAINER
from contracts.training import DatasetImage, DatasetManifest, ModelRecord, ModelStatus
from terra.nats.connection import jetstream
from terra.nats.provisioning import provision
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from trainer_service.config import TrainerSettings
from trainer_service.datasets import DatasetRetention

pytestmark = pytest.mark.integration

RETENTION_S = 60.0


@pytest.fixture
def storage(s3) -> ObjectStorage:
    from minio import Minio

    return ObjectStorage(Minio(s3.endpoint, access_key=s3.access_key,
                               secret_key=s3.secret_key, secure=False))


@pytest.fixture
async def retention(nc, nats_endpoint, storage):
    """The sweep as the trainer runs it, with a retention of a minute."""
    await provision(nc)
    trainer = await nats_endpoint.connect(TRAINER)
    settings = TrainerSettings(dataset_retention_days=RETENTION_S / 86400,
                               dataset_sweep_s=0.05, dataset_sweep_timeout_s=10)
    yield DatasetRetention(storage, await ModelStore.open(jetstream(trainer, TRAINER)), settings)
    await trainer.drain()


async def upload(storage: ObjectStorage, user_id: str, age: timedelta) -> str:
    """A photo set as the gateway stores it (photos, then the manifest), `age` old."""
    dataset_id = new_id()
    images = []
    for index in range(2):
        key = OBJECTS.upload_key(user_id, dataset_id, f"p{index}.jpg")
        await storage.put_bytes(key, b"jpeg", "image/jpeg")
        images.append(DatasetImage(image_id=f"p{index}", key=key, filename=f"{index}.jpg",
                                   width=8, height=8))
    manifest = DatasetManifest(dataset_id=dataset_id, user_id=user_id, images=images,
                               created_at=utcnow() - age)
    await storage.put_bytes(OBJECTS.upload_key(user_id, dataset_id, "manifest.json"),
                            manifest.model_dump_json().encode(), "application/json")
    return dataset_id


async def files(storage: ObjectStorage, user_id: str, dataset_id: str) -> list[str]:
    return await storage.list_keys(OBJECTS.upload_key(user_id, dataset_id, ""))


async def test_only_sets_past_retention_that_no_live_model_uses_are_deleted(
        nc, storage, retention):
    models = await ModelStore.open(nc.jetstream())
    alice, bob = new_id(), new_id()
    old = timedelta(seconds=2 * RETENTION_S)
    unused = await upload(storage, alice, old)
    young = await upload(storage, alice, timedelta(0))
    ready = await upload(storage, bob, old)
    training = await upload(storage, bob, old)
    cancelled = await upload(storage, bob, old)
    for dataset_id, status in ((ready, ModelStatus.READY), (training, ModelStatus.TRAINING),
                               (cancelled, ModelStatus.CANCELLED)):
        await models.create(ModelRecord(model_id=new_id(), user_id=bob, trigger_word="zqx",
                                        dataset_id=dataset_id, status=status))
    assert await models.claim_active(bob, new_id())  # `active.<user>` shares the bucket

    assert await retention.sweep() >= 2  # other tests' old sets may go too

    assert await files(storage, alice, unused) == []
    assert await files(storage, bob, cancelled) == []
    for user_id, dataset_id in ((alice, young), (bob, ready), (bob, training)):
        assert len(await files(storage, user_id, dataset_id)) == 3, dataset_id


async def test_the_supervised_loop_sweeps_again_and_again(storage, retention):
    alice = new_id()
    first = await upload(storage, alice, timedelta(seconds=2 * RETENTION_S))
    loop = asyncio.create_task(retention.sweep_forever())
    try:
        for _ in range(200):
            if not await files(storage, alice, first):
                break
            await asyncio.sleep(0.05)
        assert await files(storage, alice, first) == []
        second = await upload(storage, alice, timedelta(seconds=2 * RETENTION_S))
        for _ in range(200):
            if not await files(storage, alice, second):
                break
            await asyncio.sleep(0.05)
        assert await files(storage, alice, second) == []
        assert not loop.done()
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
