"""Uploaded photo sets through the gateway: listed with the models trained on them,
deleted by their owner only, never while a model trains on them."""

from __future__ import annotations

import asyncio

import pytest

from contracts.topology import OBJECTS
from terra.records.objects import ObjectStorage
from tests.e2e.client import register
from tests.e2e.test_training import photo_files, upload

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def trainer(stack):
    """A trainer for this module only, stopped when it ends: tests/e2e/test_training.py
    starts one for the session, and a second would change its queue positions."""
    process = stack.start_service("trainer", "trainer_service",
                                  TERRA_PROGRESS_INTERVAL_S="0.2", TERRA_SAMPLES="1")
    yield process
    process.stop()


@pytest.fixture
def storage(s3) -> ObjectStorage:
    from minio import Minio

    return ObjectStorage(Minio(s3.endpoint, access_key=s3.access_key,
                               secret_key=s3.secret_key, secure=False), OBJECTS.bucket)


async def uploaded(http, account, first_seed: int) -> str:
    response = await upload(http, account, photo_files(10, first_seed=first_seed))
    assert response.status_code == 201, response.text
    return response.json()["dataset_id"]


async def listed(http, account) -> dict[str, dict]:
    response = await http.get("/api/training/datasets", headers=account.headers)
    assert response.status_code == 200, response.text
    return {d["dataset_id"]: d for d in response.json()}


async def training_status(http, account, job_id: str, wanted: str) -> None:
    for _ in range(600):
        status = (await http.get(f"/api/training/status/{job_id}",
                                 headers=account.headers)).json()["status"]
        if status == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"training {job_id} still {status}, not {wanted}")


async def test_a_set_under_a_training_model_is_listed_with_it_and_cannot_be_deleted(
        http, trainer, storage):
    alice = await register(http)
    dataset_id = await uploaded(http, alice, first_seed=1000)
    started = await http.post("/api/training/start", headers=alice.headers, json={
        "dataset_id": dataset_id, "steps": 400, "rank": 4})
    assert started.status_code == 202, started.text
    job_id, model_id = started.json()["job_id"], started.json()["model_id"]
    spare = await uploaded(http, alice, first_seed=1050)

    sets = await listed(http, alice)
    assert list(sets) == [spare, dataset_id]  # newest first
    dataset = sets[dataset_id]
    assert dataset["image_count"] == 10 and dataset["created_at"]
    assert dataset["models"] == [{"model_id": model_id, "status": "training"}]
    assert sets[spare]["models"] == []

    refused = await http.delete(f"/api/training/datasets/{dataset_id}", headers=alice.headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["models"] == [model_id]
    assert len(await storage.list_keys(f"uploads/{alice.user_id}/{dataset_id}/")) == 11
    other = await http.delete(f"/api/training/datasets/{spare}", headers=alice.headers)
    assert other.status_code == 204, other.text  # only the set under training is held

    cancel = await http.post(f"/api/training/{job_id}/cancel", headers=alice.headers)
    assert cancel.status_code == 202
    await training_status(http, alice, job_id, "cancelled")
    dataset = (await listed(http, alice))[dataset_id]
    assert dataset["models"] == [{"model_id": model_id, "status": "cancelled"}]
    deleted = await http.delete(f"/api/training/datasets/{dataset_id}", headers=alice.headers)
    assert deleted.status_code == 204, deleted.text
    assert await listed(http, alice) == {}


async def test_deleting_a_set_removes_every_object_under_it_and_nothing_else(http, storage):
    alice = await register(http)
    doomed = await uploaded(http, alice, first_seed=1100)
    kept = await uploaded(http, alice, first_seed=1200)
    assert set(await listed(http, alice)) == {doomed, kept}

    response = await http.delete(f"/api/training/datasets/{doomed}", headers=alice.headers)

    assert response.status_code == 204
    assert await storage.list_keys(f"uploads/{alice.user_id}/{doomed}/") == []
    assert len(await storage.list_keys(f"uploads/{alice.user_id}/{kept}/")) == 11
    assert set(await listed(http, alice)) == {kept}
    again = await http.delete(f"/api/training/datasets/{doomed}", headers=alice.headers)
    assert again.status_code == 404


async def test_another_user_sees_none_of_your_sets_and_cannot_delete_them(http, storage):
    alice, bob = await register(http), await register(http)
    dataset_id = await uploaded(http, alice, first_seed=1300)

    assert await listed(http, bob) == {}
    response = await http.delete(f"/api/training/datasets/{dataset_id}", headers=bob.headers)

    assert response.status_code == 404
    assert len(await storage.list_keys(f"uploads/{alice.user_id}/{dataset_id}/")) == 11
    assert set(await listed(http, alice)) == {dataset_id}


async def test_listing_and_deleting_sets_needs_a_signed_in_user(http):
    assert (await http.get("/api/training/datasets")).status_code == 401
    assert (await http.delete("/api/training/datasets/abc")).status_code == 401


async def test_no_training_route_shadows_the_sets(http):
    alice = await register(http)
    assert (await http.get("/api/training/datasets", headers=alice.headers)).json() == []
    # A set named like a training route's last segment still reaches the sets' routes.
    response = await http.delete("/api/training/datasets/cancel", headers=alice.headers)
    assert response.status_code == 404
    assert response.json()["detail"] == "No photo set cancel."
