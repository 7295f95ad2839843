"""Personal LoRA training through the gateway and a real trainer_service (tiny FLUX)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from contracts.topology import OBJECTS
from tests.e2e.client import frames_until, open_socket, register, stored_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def photo(seed: int, size=(320, 400), fmt="JPEG") -> bytes:
    """A distinct image per seed (blocks of colour: no two are near-duplicates)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize(size, Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def photo_files(count: int, first_seed: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"me-{i}.jpg", photo(first_seed + i), "image/jpeg"))
            for i in range(count)]


@pytest.fixture(scope="session")
def trainer(stack):
    return stack.start_service("trainer", "trainer_service",
                               TERRA_CHECKPOINT_EVERY="2", TERRA_PROGRESS_INTERVAL_S="0.2",
                               TERRA_SAMPLES="1")


async def upload(http, account, files) -> dict:
    response = await http.post("/api/training/upload", files=files, headers=account.headers,
                               timeout=60)
    return response



async def test_upload_train_and_use_the_model(http, gateway_url, trainer):
    alice = await register(http)
    uploaded = await upload(http, alice, photo_files(10))
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert len(dataset["images"]) == 10
    assert all(image["width"] == 320 and image["warnings"] for image in dataset["images"])

    socket = (await open_socket(gateway_url, alice, "/ws/training")).socket
    try:
        started = await http.post("/api/training/start", headers=alice.headers, json={
            "dataset_id": dataset["dataset_id"], "steps": 6, "rank": 4})
        assert started.status_code == 202, started.text
        job_id, model_id = started.json()["job_id"], started.json()["model_id"]
        trigger = started.json()["trigger_word"]

        again = await http.post("/api/training/start", headers=alice.headers,
                                json={"dataset_id": dataset["dataset_id"]})
        assert again.status_code == 409  # one running training per user

        frames = await frames_until(socket, job_id, {"training.completed.v1", "job.failed.v1"})
    finally:
        await socket.close()
    types = [f["type"] for f in frames]
    assert types[0] == "training.queued.v1" and "training.started.v1" in types, types
    assert types[-1] == "training.completed.v1", frames[-1]
    progress = [f["payload"] for f in frames if f["type"] == "training.progressed.v1"]
    assert progress and progress[-1]["step"] == 6 and progress[-1]["loss"] is not None

    models = (await http.get("/api/models", headers=alice.headers)).json()
    [model] = [m for m in models if m["model_id"] == model_id]
    assert model["status"] == "ready" and model["trigger_word"] == trigger
    assert len(model["sample_urls"]) == 1
    status = (await http.get(f"/api/training/status/{job_id}", headers=alice.headers)).json()
    assert status["status"] == "succeeded" and status["progress"] == 1.0
    listed = (await http.get("/api/training/status", headers=alice.headers)).json()
    assert listed[0]["job_id"] == job_id

    # The slot is free again, and the model can be deleted.
    assert (await http.delete(f"/api/models/{model_id}", headers=alice.headers)).status_code == 204
    assert model_id not in {m["model_id"] for m in
                            (await http.get("/api/models", headers=alice.headers)).json()}


async def test_cancel_a_running_training(http, gateway_url, trainer):
    alice = await register(http)
    dataset = (await upload(http, alice, photo_files(10, first_seed=100))).json()
    socket = (await open_socket(gateway_url, alice, "/ws/training")).socket
    try:
        started = (await http.post("/api/training/start", headers=alice.headers, json={
            "dataset_id": dataset["dataset_id"], "steps": 400, "rank": 4})).json()
        job_id = started["job_id"]
        await frames_until(socket, job_id, {"training.progressed.v1"})
        response = await http.post(f"/api/training/{job_id}/cancel", headers=alice.headers)
        assert response.status_code == 202
        frames = await frames_until(socket, job_id, {"training.cancelled.v1",
                                                     "training.completed.v1"})
    finally:
        await socket.close()
    assert frames[-1]["type"] == "training.cancelled.v1"
    status = (await http.get(f"/api/training/status/{job_id}", headers=alice.headers)).json()
    assert status["status"] == "cancelled"
    [model] = [m for m in (await http.get("/api/models", headers=alice.headers)).json()
               if m["model_id"] == started["model_id"]]
    assert model["status"] == "cancelled"  # not "failed": it was stopped on purpose
    # The slot is free: a new training may start.
    again = await http.post("/api/training/start", headers=alice.headers,
                            json={"dataset_id": dataset["dataset_id"], "steps": 1})
    assert again.status_code == 202


def _truncated_jpeg() -> bytes:
    data = photo(7)
    return data[: len(data) // 2]


def _bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([("files", ("notes.jpg", b"just some text, not a photo\n" * 20, "image/jpeg"))],
         "not an image"),
        ([("files", ("cut.jpg", _truncated_jpeg(), "image/jpeg"))], "truncated"),
        ([("files", ("dot.png", photo(1, (1, 1), "PNG"), "image/png"))], "256"),
        ([("files", ("bomb.png", _bomb(), "image/png"))], "decompression bomb"),
        ([("files", ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (25 * 1024 * 1024), "image/jpeg"))],
         "20 MB"),
    ],
    ids=["text-named-jpg", "truncated-jpeg", "1x1", "decompression-bomb", "25-MB"],
)
async def test_bad_files_are_named_and_nothing_is_stored(http, alice_with_storage, extra,
                                                         reason):
    account, storage = alice_with_storage
    response = await upload(http, account, photo_files(9, first_seed=200) + extra)
    assert response.status_code == 422, response.text
    body = response.json()
    assert any(reason in r["reason"] for r in body["rejected"]), body
    assert "9 usable photos" in body["detail"]
    assert await storage.list_keys(f"uploads/{account.user_id}/") == []


@pytest.mark.parametrize("count", [9, 21])
async def test_too_few_or_too_many_photos(http, alice_with_storage, count):
    account, storage = alice_with_storage
    response = await upload(http, account, photo_files(count, first_seed=300))
    assert response.status_code == 422
    assert await storage.list_keys(f"uploads/{account.user_id}/") == []


async def test_another_users_dataset_is_not_found(http, trainer):
    alice, bob = await register(http), await register(http)
    dataset = (await upload(http, alice, photo_files(10, first_seed=400))).json()
    response = await http.post("/api/training/start", headers=bob.headers,
                               json={"dataset_id": dataset["dataset_id"]})
    assert response.status_code == 404


@pytest.fixture
async def alice_with_storage(http, s3):
    from minio import Minio

    from terra.records.objects import ObjectStorage

    account = await register(http)
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                   secure=False)
    return account, ObjectStorage(client, OBJECTS.bucket)


async def test_cancel_a_queued_training(http, gateway_url, trainer):
    alice, bob = await register(http), await register(http)
    busy = (await upload(http, alice, photo_files(10, first_seed=500))).json()
    waiting = (await upload(http, bob, photo_files(10, first_seed=600))).json()
    alice_ws = (await open_socket(gateway_url, alice, "/ws/training")).socket
    bob_ws = (await open_socket(gateway_url, bob, "/ws/training")).socket
    try:
        running = (await http.post("/api/training/start", headers=alice.headers, json={
            "dataset_id": busy["dataset_id"], "steps": 400, "rank": 4})).json()
        await frames_until(alice_ws, running["job_id"], {"training.progressed.v1"})
        queued = (await http.post("/api/training/start", headers=bob.headers, json={
            "dataset_id": waiting["dataset_id"], "steps": 5, "rank": 4})).json()
        [frame] = await frames_until(bob_ws, queued["job_id"], {"training.queued.v1"})
        assert frame["payload"]["position"] >= 1  # behind alice's

        response = await http.post(f"/api/training/{queued['job_id']}/cancel",
                                   headers=bob.headers)
        assert response.status_code == 202
        # Cancelled at once, not when the trainer gets to it.
        frames = await frames_until(bob_ws, queued["job_id"], {"training.cancelled.v1"},
                                    timeout_s=10)
        assert "training.started.v1" not in [f["type"] for f in frames]
        await http.post(f"/api/training/{running['job_id']}/cancel", headers=alice.headers)
        await frames_until(alice_ws, running["job_id"], {"training.cancelled.v1"})
    finally:
        await alice_ws.close()
        await bob_ws.close()


async def test_account_deletion_erases_photos_and_models(http, gateway_url, trainer,
                                                         alice_with_storage, nc):
    from terra.records.models import ModelStore

    account, storage = alice_with_storage
    dataset = (await upload(http, account, photo_files(10, first_seed=700))).json()
    socket = (await open_socket(gateway_url, account, "/ws/training")).socket
    try:
        started = (await http.post("/api/training/start", headers=account.headers, json={
            "dataset_id": dataset["dataset_id"], "steps": 2, "rank": 4})).json()
        await frames_until(socket, started["job_id"], {"training.completed.v1"})
    finally:
        await socket.close()
    assert await storage.list_keys(f"models/{account.user_id}/")
    assert (await http.delete("/api/me", headers=account.headers)).status_code == 202

    models = await ModelStore.open(nc.jetstream())
    for _ in range(100):
        left = (await storage.list_keys(f"uploads/{account.user_id}/")
                + await storage.list_keys(f"models/{account.user_id}/"))
        if not left and not await models.list(account.user_id):
            break
        await asyncio.sleep(0.1)
    assert left == [] and await models.list(account.user_id) == []


async def test_a_worker_killed_mid_training_is_resumed_and_completes_once(
    http, gateway_url, stack, trainer, nc
):
    alice = await register(http)
    dataset = (await upload(http, alice, photo_files(10, first_seed=800))).json()
    socket = (await open_socket(gateway_url, alice, "/ws/training")).socket
    try:
        started = (await http.post("/api/training/start", headers=alice.headers, json={
            "dataset_id": dataset["dataset_id"], "steps": 40, "rank": 4})).json()
        job_id = started["job_id"]

        async def reached(step: int) -> None:
            while True:
                [*_, frame] = await frames_until(socket, job_id, {"training.progressed.v1"})
                if frame["payload"]["step"] >= step:
                    return

        await reached(6)  # checkpoints every 2 steps: at least one is stored
        for process in stack.processes:
            if process.name == "trainer":
                process.kill()  # every trainer dies mid-job, as in a crash
        stack.start_service("trainer", "trainer_service", TERRA_CHECKPOINT_EVERY="2",
                            TERRA_PROGRESS_INTERVAL_S="0.2", TERRA_SAMPLES="1")
        # Redelivered once ack_wait passes without heartbeats; resumed from the checkpoint.
        frames = await frames_until(socket, job_id, {"training.completed.v1", "job.failed.v1"},
                                    timeout_s=150)
    finally:
        await socket.close()
    assert frames[-1]["type"] == "training.completed.v1", frames[-1]
    # One started in all; the hand-off is said once, with the progress the checkpoint kept.
    types = [f["type"] for f in frames]
    assert len(await stored_events(nc, f"terra.evt.training.started.{alice.user_id}")) == 1
    restarts = [f["payload"]["resumed_from_step"] for f in frames
                if f["type"] == "job.requeued.v1"]
    assert restarts and restarts[-1] >= 2, types

    # Exactly once: one completed event in the stream, one ready model.
    completed = await stored_events(nc, f"terra.evt.training.completed.{alice.user_id}")
    assert len(completed) == 1
    models = (await http.get("/api/models", headers=alice.headers)).json()
    assert [m["status"] for m in models] == ["ready"]
