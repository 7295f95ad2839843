"""Images past their retention are found by the sweep; others are left alone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.base import utcnow
from contracts.generation import BaseModelName, ImageRecord
from contracts.ids import new_id
from terra.nats.provisioning import provision
from terra.records.images import ImageStore

pytestmark = pytest.mark.integration


def record(user: str, expires_in: timedelta) -> ImageRecord:
    return ImageRecord(image_id=new_id(), user_id=user, job_id=new_id(), key="images/x.png",
                       width=256, height=256, seed=1, prompt="p", model=BaseModelName.SCHNELL,
                       expires_at=utcnow() + expires_in)


async def test_only_expired_images_are_swept(nc):
    await provision(nc)
    images = await ImageStore.open(nc.jetstream())
    user = new_id()
    old, fresh = record(user, timedelta(seconds=-1)), record(user, timedelta(days=7))
    await images.create(old)
    await images.create(fresh)
    expired = {r.image_id for r in await images.expired(utcnow())}
    assert old.image_id in expired and fresh.image_id not in expired


async def test_the_sweep_deletes_object_and_record(nc, s3):
    from minio import Minio

    from generator_service.config import GeneratorSettings
    from generator_service.handlers import GeneratorHandlers
    from terra.records.objects import ObjectStorage

    await provision(nc)
    js = nc.jetstream()
    storage = ObjectStorage(Minio(s3.endpoint, access_key=s3.access_key,
                                  secret_key=s3.secret_key, secure=False))
    await storage.ensure_buckets()
    images = await ImageStore.open(js)
    user = new_id()
    old = record(user, timedelta(seconds=-1)).model_copy(
        update={"key": f"images/{user}/j/0.png"})
    await storage.put_bytes(old.key, b"png", "image/png")
    await images.create(old)
    fresh = record(user, timedelta(days=1)).model_copy(update={"key": f"images/{user}/k/0.png"})
    await storage.put_bytes(fresh.key, b"png", "image/png")
    await images.create(fresh)

    handlers = GeneratorHandlers(settings=GeneratorSettings(), generator=None, lifecycle=None,
                                 jobs=None, models=None, images=images, slots=None, events=None,
                                 storage=storage)
    # Counted here, or by a generator of the test session sweeping the shared bucket first.
    await handlers.sweep_expired()
    assert not await storage.exists(old.key)
    assert await images.get(user, old.image_id) is None
    assert await storage.exists(fresh.key) and await images.get(user, fresh.image_id)
