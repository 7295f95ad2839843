"""The gateway lets a user download only objects under their own folders: an image or
model record that names another key (damaged, or written by a bug) gets no presigned URL
and no streamed bytes, whatever the gateway's S3 key could read."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from contracts.base import utcnow
from contracts.generation import BaseModelName, ImageRecord
from contracts.ids import new_id
from contracts.topology import OBJECTS
from contracts.training import ModelRecord, ModelStatus
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from tests.e2e.client import register

pytestmark = [pytest.mark.e2e]


def image(user_id: str, key: str) -> ImageRecord:
    return ImageRecord(image_id=new_id(), user_id=user_id, job_id=new_id(), key=key,
                       width=64, height=64, seed=1, prompt="p", model=BaseModelName.SCHNELL,
                       expires_at=utcnow() + timedelta(days=1))


@pytest.fixture
def storage(s3) -> ObjectStorage:
    """The operator's: the test writes what the services would have."""
    return ObjectStorage(s3.client())


async def test_an_image_record_naming_another_users_key_is_neither_listed_nor_served(
        http, nc, storage):
    alice, bob = await register(http), await register(http)
    own_key = OBJECTS.image_key(alice.user_id, new_id(), "0.png")
    bobs_key = OBJECTS.image_key(bob.user_id, new_id(), "0.png")
    for key in (own_key, bobs_key):
        await storage.put_bytes(key, b"png of " + key.encode(), "image/png")
    images = await ImageStore.open(nc.jetstream())
    own, stolen = image(alice.user_id, own_key), image(alice.user_id, bobs_key)
    for record in (own, stolen):
        await images.create(record)

    listed = await http.get(f"/api/generate/download/{alice.user_id}", headers=alice.headers)
    assert listed.status_code == 200
    assert [view["image_id"] for view in listed.json()] == [own.image_id]
    async with httpx.AsyncClient() as client:
        presigned = await client.get(listed.json()[0]["download_url"])
        assert presigned.content == b"png of " + own_key.encode()

    served = await http.get(f"/api/images/{own.image_id}", headers=alice.headers)
    assert served.status_code == 200 and served.content == b"png of " + own_key.encode()
    refused = await http.get(f"/api/images/{stolen.image_id}", headers=alice.headers)
    assert refused.status_code == 404


async def test_a_model_gets_urls_of_its_own_samples_only(http, nc, storage):
    alice, bob = await register(http), await register(http)
    model_id = new_id()
    own_sample = OBJECTS.model_key(alice.user_id, model_id, "samples/0.png")
    lora = OBJECTS.model_key(alice.user_id, model_id, "lora.safetensors")
    bobs_sample = OBJECTS.model_key(bob.user_id, new_id(), "samples/0.png")
    for key in (own_sample, lora, bobs_sample):
        await storage.put_bytes(key, b"bytes of " + key.encode())
    models = await ModelStore.open(nc.jetstream())
    await models.create(ModelRecord(
        model_id=model_id, user_id=alice.user_id, trigger_word="sks", status=ModelStatus.READY,
        lora_key=lora, sample_image_keys=[own_sample, bobs_sample, lora]))

    response = await http.get("/api/models", headers=alice.headers)
    assert response.status_code == 200
    [view] = [m for m in response.json() if m["model_id"] == model_id]
    assert len(view["sample_urls"]) == 1
    async with httpx.AsyncClient() as client:
        sample = await client.get(view["sample_urls"][0])
        assert sample.status_code == 200 and sample.content == b"bytes of " + own_sample.encode()
