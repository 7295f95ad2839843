"""Image generation through the gateway and a real generator_service (tiny FLUX)."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image

from contracts.ids import new_id
from contracts.training import ModelRecord, ModelStatus
from tests.e2e.client import frames_until, open_socket, register, stored_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SMALL = {"width": 256, "height": 256}



DONE = {"generation.image_generated.v1", "job.failed.v1", "generation.cancelled.v1"}


async def test_generate_and_download_a_png(http, gateway_url, generator):
    alice = await register(http)
    socket = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    try:
        response = await http.post("/api/generate/image", headers=alice.headers, json={
            "prompt": "a lighthouse at dusk", "width": 256, "height": 320, "seed": 7,
            "num_images": 2})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["model"] == "schnell" and accepted["queue_position"] >= 0
        frames = await frames_until(socket, accepted["job_id"], DONE)
    finally:
        await socket.close()
    types = [f["type"] for f in frames]
    assert types[-1] == "generation.image_generated.v1", frames[-1]
    assert "generation.started.v1" in types and "generation.progressed.v1" in types
    images = frames[-1]["payload"]["images"]
    assert [(i["width"], i["height"]) for i in images] == [(256, 320)] * 2

    listed = (await http.get(f"/api/generate/download/{alice.user_id}",
                             headers=alice.headers)).json()
    assert {i["image_id"] for i in listed} == {i["image_id"] for i in images}
    png = await http.get(f"/api/images/{images[0]['image_id']}", headers=alice.headers)
    assert png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    assert picture.size == (256, 320) and picture.info["prompt"] == "a lighthouse at dusk"
    assert int(picture.info["seed"]) == 7

    bob = await register(http)
    assert (await http.get(f"/api/images/{images[0]['image_id']}",
                           headers=bob.headers)).status_code == 404
    assert (await http.get(f"/api/generate/download/{alice.user_id}",
                           headers=bob.headers)).status_code == 404
    assert (await http.delete(f"/api/images/{images[0]['image_id']}",
                              headers=alice.headers)).status_code == 204
    assert (await http.get(f"/api/images/{images[0]['image_id']}",
                           headers=alice.headers)).status_code == 404


async def test_same_seed_same_pixels(http, gateway_url, generator):
    alice = await register(http)
    socket = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    pictures = []
    try:
        for _ in range(2):
            job = (await http.post("/api/generate/image", headers=alice.headers, json={
                "prompt": "a red fox", "seed": 42, **SMALL})).json()["job_id"]
            frames = await frames_until(socket, job, DONE)
            image_id = frames[-1]["payload"]["images"][0]["image_id"]
            png = await http.get(f"/api/images/{image_id}", headers=alice.headers)
            pictures.append(Image.open(io.BytesIO(png.content)).tobytes())
    finally:
        await socket.close()
    assert pictures[0] == pictures[1]


async def test_auto_picks_dev_with_my_lora_once_i_have_one(http, nc, generator):
    alice = await register(http)
    before = (await http.post("/api/generate/image", headers=alice.headers,
                              json={"prompt": "me", **SMALL})).json()
    assert before["model"] == "schnell" and before["lora_id"] is None

    from terra.records.models import ModelStore

    models = await ModelStore.open(nc.jetstream())
    mine = ModelRecord(model_id=new_id(), user_id=alice.user_id, trigger_word="zqx",
                       status=ModelStatus.READY, lora_key="models/x/y/lora.safetensors")
    await models.create(mine)
    after = (await http.post("/api/generate/image", headers=alice.headers,
                             json={"prompt": "zqx person", **SMALL})).json()
    assert after["model"] == "dev" and after["lora_id"] == mine.model_id

    bob = await register(http)
    theirs = await http.post("/api/generate/image", headers=bob.headers,
                             json={"prompt": "x", "lora_id": mine.model_id, **SMALL})
    assert theirs.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a cat", "width": 1000}, "width"),
        ({"prompt": "a cat", "steps": 0}, "steps"),
        ({"prompt": "a cat", "num_images": 9}, "num_images"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "a cat", "model": "sdxl"}, "model"),
    ],
)
async def test_bad_requests_name_the_field(http, body, field):
    alice = await register(http)
    response = await http.post("/api/generate/image", headers=alice.headers, json=body)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_per_user_cap_then_fairness_and_cancel(http, gateway_url, generator):
    alice, bob = await register(http), await register(http)
    alice_ws = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    bob_ws = (await open_socket(gateway_url, bob, "/ws/generate")).socket
    try:
        jobs = []
        for i in range(4):  # sizes differ, so they cannot share a loop (batch)
            response = await http.post("/api/generate/image", headers=alice.headers, json={
                "prompt": "a slow one", "steps": 20, "width": 256 + 16 * i, "height": 256})
            assert response.status_code == 202
            jobs.append(response.json()["job_id"])
        over = await http.post("/api/generate/image", headers=alice.headers,
                               json={"prompt": "one more", **SMALL})
        assert over.status_code == 429 and int(over.headers["retry-after"]) > 0

        bobs = (await http.post("/api/generate/image", headers=bob.headers,
                                json={"prompt": "mine", **SMALL})).json()["job_id"]
        # Cancel alice's last while it waits, then her first while it may run.
        await http.post(f"/api/generate/{jobs[-1]}/cancel", headers=alice.headers)
        cancelled = await frames_until(alice_ws, jobs[-1], DONE)
        assert cancelled[-1]["type"] == "generation.cancelled.v1"

        finished_at: dict[str, float] = {}

        async def watch(socket, wanted: list[str]) -> None:
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(120):
                while not set(wanted) <= set(finished_at):
                    frame = json.loads(await socket.recv())
                    if frame.get("job_id") in wanted and frame["type"] in DONE:
                        assert frame["type"] == "generation.image_generated.v1", frame
                        finished_at[frame["job_id"]] = loop.time()

        await asyncio.gather(watch(alice_ws, jobs[:3]), watch(bob_ws, [bobs]))
    finally:
        await alice_ws.close()
        await bob_ws.close()
    # Bob queued after four of alice's, yet his one job is not served after all of hers.
    assert finished_at[bobs] < finished_at[jobs[2]]


async def test_a_worker_killed_mid_job_gives_exactly_one_result(http, gateway_url, stack,
                                                                generator, nc):
    alice = await register(http)
    socket = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    try:
        job = (await http.post("/api/generate/image", headers=alice.headers, json={
            "prompt": "a long one", "steps": 100, "width": 512, "height": 512})).json()["job_id"]
        await frames_until(socket, job, {"generation.progressed.v1"})
        for process in stack.processes:
            if process.name == "generator":
                process.kill()  # every generator dies mid-job
        stack.start_service("generator", "generator_service", TERRA_PROGRESS_INTERVAL_S="0.01",
                            TERRA_BATCH_MAX_IMAGES="4")
        frames = await frames_until(socket, job, DONE, timeout_s=150)
    finally:
        await socket.close()
    assert frames[-1]["type"] == "generation.image_generated.v1", frames[-1]
    completed = await stored_events(nc, f"terra.evt.generation.completed.{alice.user_id}")
    assert len(completed) == 1
    listed = (await http.get(f"/api/generate/download/{alice.user_id}",
                             headers=alice.headers)).json()
    assert len(listed) == 1


async def test_one_users_burst_does_not_starve_another(stack, generator):
    import httpx

    url = stack.start_gateway(TERRA_MAX_GENERATIONS_PER_USER="10")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        alice, bob = await register(http), await register(http)
        bob_ws = (await open_socket(url, bob, "/ws/generate")).socket
        alice_ws = (await open_socket(url, alice, "/ws/generate")).socket
        try:
            # The first job is long, so the other nine and bob's queue up behind it.
            burst = [(await http.post("/api/generate/image", headers=alice.headers, json={
                "prompt": f"burst {i}", "steps": 80 if i == 0 else 6, **SMALL})).json()[
                "job_id"] for i in range(10)]
            single = (await http.post("/api/generate/image", headers=bob.headers, json={
                "prompt": "just one", "steps": 6, **SMALL})).json()["job_id"]
            order: list[str] = []

            async def collect(socket, wanted: set[str]) -> None:
                async with asyncio.timeout(180):
                    while not wanted <= set(order):
                        frame = json.loads(await socket.recv())
                        if frame.get("job_id") in wanted and frame["type"] in DONE:
                            order.append(frame["job_id"])

            await asyncio.gather(collect(alice_ws, set(burst)), collect(bob_ws, {single}))
        finally:
            await alice_ws.close()
            await bob_ws.close()
    # First come first served would finish bob's job eleventh; turns put it in the loop
    # right after alice's first (batched with up to three of hers: compatible jobs).
    assert order.index(single) <= 4, order


async def test_cancel_a_running_generation(http, gateway_url, generator):
    alice = await register(http)
    socket = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    try:
        job = (await http.post("/api/generate/image", headers=alice.headers, json={
            "prompt": "a long one", "steps": 100, "width": 512, "height": 512})).json()["job_id"]
        await frames_until(socket, job, {"generation.progressed.v1"})
        assert (await http.post(f"/api/generate/{job}/cancel",
                                headers=alice.headers)).status_code == 202
        frames = await frames_until(socket, job, DONE)
    finally:
        await socket.close()
    assert frames[-1]["type"] == "generation.cancelled.v1", frames[-1]
    steps = [f["payload"]["step"] for f in frames if f["type"] == "generation.progressed.v1"]
    assert max(steps) < 100  # stopped early, not run to the end
    assert (await http.get(f"/api/jobs/{job}", headers=alice.headers)).json()["status"] == \
        "cancelled"


async def test_account_deletion_erases_images(http, gateway_url, generator, s3):
    from minio import Minio

    from terra.records.objects import ObjectStorage

    alice = await register(http)
    socket = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    try:
        job = (await http.post("/api/generate/image", headers=alice.headers,
                               json={"prompt": "keep me", **SMALL})).json()["job_id"]
        await frames_until(socket, job, DONE)
    finally:
        await socket.close()
    storage = ObjectStorage(Minio(s3.endpoint, access_key=s3.access_key,
                                  secret_key=s3.secret_key, secure=False))
    assert await storage.list_keys(f"images/{alice.user_id}/")
    assert (await http.delete("/api/me", headers=alice.headers)).status_code == 202
    for _ in range(100):
        if not await storage.list_keys(f"images/{alice.user_id}/"):
            break
        await asyncio.sleep(0.1)
    assert await storage.list_keys(f"images/{alice.user_id}/") == []
