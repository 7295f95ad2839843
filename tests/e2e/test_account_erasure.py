"""Nothing a deleted account had or made stays: after `DELETE /api/me`, every KV bucket
and every object prefix is searched for the user, including what a job still running at
the moment of deletion stored after the first erasure (a second pass catches it).

Kept on purpose: the user's entry in `terra_revocations` (it refuses their tokens until
those expire, then expires itself), their mark in `terra_deleted_accounts` (workers drop a
late command of theirs by it; it expires after 8 days), and the throttles' counters, whose
keys are keyed hashes that name no one.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from contracts import topology
from tests.e2e.client import frames_until, open_socket, register
from tests.e2e.test_training import photo_files, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]
KEPT = {topology.REVOCATIONS_KV.bucket, topology.DELETED_ACCOUNTS_KV.bucket,
        topology.LOGIN_THROTTLE_KV.bucket, topology.SIGNUP_THROTTLE_KV.bucket}


@pytest.fixture(scope="module")
def workers(stack):
    """Workers for this module only, stopped when it ends: other modules count on theirs."""
    started = [
        stack.start_service("prompt", "prompt_service"),
        stack.start_service("trainer", "trainer_service", TERRA_CHECKPOINT_EVERY="2",
                            TERRA_SAMPLES="1"),
        stack.start_service("generator", "generator_service",
                            TERRA_PROGRESS_INTERVAL_S="0.05"),
    ]
    yield started
    for process in started:
        process.stop()


async def traces_of(nc, s3_storage, user_id: str) -> list[str]:
    """Every KV entry (key or value) and object that names the user."""
    found = []
    js = nc.jetstream()
    for spec in topology.KV_BUCKETS:
        if spec.bucket in KEPT:
            continue
        kv = await js.key_value(spec.bucket)
        watcher = await kv.watchall(ignore_deletes=True)
        async for entry in watcher:
            if entry is None:
                break
            if user_id in entry.key or (entry.value and user_id in entry.value.decode()):
                found.append(f"kv {spec.bucket}/{entry.key}")
        await watcher.stop()
    for prefix in topology.OBJECTS.user_prefixes(user_id):
        found += [f"s3 {key}" for key in await s3_storage.list_keys(prefix)]
    return found


async def test_a_deleted_account_leaves_nothing_behind(http, gateway_url, nc, s3, workers):
    from minio import Minio

    from terra.records.objects import ObjectStorage

    storage = ObjectStorage(Minio(s3.endpoint, access_key=s3.access_key,
                                  secret_key=s3.secret_key, secure=False))
    alice = await register(http)
    socket = (await open_socket(gateway_url, alice, "/ws")).socket
    try:
        prompt = (await http.post("/api/prompt/optimize", headers=alice.headers,
                                  json={"prompt": "a fox"})).json()["job_id"]
        await frames_until(socket, prompt, {"prompt.optimized.v1"})
        dataset = (await upload(http, alice, photo_files(10, first_seed=900))).json()
        training = (await http.post("/api/training/start", headers=alice.headers, json={
            "dataset_id": dataset["dataset_id"], "steps": 4, "rank": 4})).json()["job_id"]
        await frames_until(socket, training, {"training.completed.v1"}, timeout_s=120)
        done = (await http.post("/api/generate/image", headers=alice.headers, json={
            "prompt": "a fox", "width": 256, "height": 256, "steps": 2})).json()["job_id"]
        await frames_until(socket, done, {"generation.image_generated.v1"})
        # Still running when the account goes: it stores its image after the first pass.
        running = (await http.post("/api/generate/image", headers=alice.headers, json={
            "prompt": "a slow fox", "model": "schnell", "width": 512, "height": 512,
            "steps": 60})).json()["job_id"]
        await frames_until(socket, running, {"generation.progressed.v1"})
        assert await traces_of(nc, storage, alice.user_id)  # there was something to erase
        assert (await http.delete("/api/me", headers=alice.headers)).status_code == 202
    finally:
        await socket.close()

    left: list[str] = []
    for _ in range(120):
        left = await traces_of(nc, storage, alice.user_id)
        if not left:
            break
        await asyncio.sleep(0.5)
    assert left == [], left
    # And the token no longer opens anything.
    assert (await http.get("/api/me", headers=alice.headers)).status_code == 401
    revoked = await (await nc.jetstream().key_value(topology.REVOCATIONS_KV.bucket)).get(
        topology.revocation_key(alice.user_id))
    assert json.loads(revoked.value) if revoked.value.startswith(b"{") else revoked.value


async def test_a_command_of_a_deleted_account_coming_late_runs_nothing(http, nc, s3, workers):
    """Commands published after both erasure passes (an operator's replay, a command that
    waited in its stream): the workers drop them, so nothing of the account comes back."""
    from minio import Minio

    from contracts.ids import new_id
    from terra.records.objects import ObjectStorage
    from tests.e2e.test_invalid_ids import COMMANDS, publish_and_settle

    storage = ObjectStorage(Minio(s3.endpoint, access_key=s3.access_key,
                                  secret_key=s3.secret_key, secure=False))
    bob = await register(http)
    assert (await http.delete("/api/me", headers=bob.headers)).status_code == 202
    for consumer, command in COMMANDS.values():
        await publish_and_settle(nc, consumer, command(bob.user_id, new_id()))

    assert await traces_of(nc, storage, bob.user_id) == []
    said = await stored_types(nc, bob.user_id)
    assert set(said) <= {"account.registered.v1", "account.deleted.v1"}, said


async def stored_types(nc, user_id: str) -> list[str]:
    from nats.js.errors import NotFoundError

    js, types, seq = nc.jetstream(), [], 1
    while True:
        try:
            raw = await js.get_msg(topology.EVENTS.name, seq=seq,
                                   subject=topology.user_events_filter(user_id), next=True)
        except NotFoundError:
            return types
        types.append(json.loads(raw.data)["type"])
        seq = raw.seq + 1
