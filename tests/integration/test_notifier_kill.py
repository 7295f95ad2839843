"""notifier_service killed (SIGKILL) in the middle of its deliveries, as a process: after
it starts again, every event reaches the webhook, and never under a second id.

A kill can come after a webhook answered and before the notifier recorded it: that
delivery goes out again, under the same `webhook-id`, which is what lets a receiver drop
the repeat. What must never happen is an event missing, or one event under two ids."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from contracts.generation import GeneratedImage, ImageGenerated
from contracts.notifications import CreateWebhook, WebhookReply
from contracts.permissions import OPERATOR
from contracts.topology import GATEWAY, NotifierRpc
from terra.credentials import S3Key
from terra.nats.connection import jetstream
from terra.nats.events import EventPublisher
from testing.push_standins import Reply, WebhookReceiver
from testing.stack import ServiceStack, service_env
from tests.conftest import provision_all
from tests.infra import nats_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 30
ANSWER_AFTER_S = 0.2  # each webhook answer takes this long: sends are in flight at the kill


@pytest.fixture(scope="module")
def nats_endpoint(tmp_path_factory):
    """A server of this module's own: no other notifier shares these durable consumers."""
    with nats_server(tmp_path_factory.mktemp("notifier-kill-nats")) as endpoint:
        asyncio.run(provision_all(endpoint))
        yield endpoint


async def test_a_killed_notifier_delivers_every_event_once_under_one_id(
        nats_endpoint, nc, tmp_path):
    env = service_env(nats_endpoint.url, "127.0.0.1:1", S3Key("unused", "unused"),
                      TERRA_NATS_CREDENTIALS_DIR=str(nats_endpoint.credentials.directory),
                      TERRA_DATA_DIR=str(tmp_path / "data"), TERRA_LOG_FORMAT="text",
                      TERRA_NOTIFY_RETRY_SCHEDULE_S="0.2,0.2,0.2",
                      TERRA_NOTIFY_PER_TARGET_CONCURRENCY="4")
    stack = ServiceStack(env, tmp_path / "logs", cwd=Path(__file__).resolve().parents[2])
    async with WebhookReceiver(default=Reply(200, delay_s=ANSWER_AFTER_S)) as hooks:
        try:
            await asyncio.to_thread(stack.start_service, "notifier", "notifier_service")
            user = f"user-{uuid.uuid4().hex[:12]}"
            gateway = await nats_endpoint.connect(GATEWAY)
            try:
                reply = await gateway.request(NotifierRpc.CREATE_WEBHOOK, CreateWebhook(
                    user_id=user, url=hooks.hook_url("kill")).model_dump_json().encode(),
                    timeout=10)
            finally:
                await gateway.drain()
            assert WebhookReply.model_validate_json(reply.data).secret

            events = EventPublisher(jetstream(nc, OPERATOR))
            jobs = [uuid.uuid4().hex for _ in range(EVENTS)]
            for job_id in jobs:
                await events.publish(ImageGenerated(user_id=user, job_id=job_id, images=[
                    GeneratedImage(image_id=f"{job_id}-0", key="images/x.png", width=64,
                                   height=64, seed=1)]))
            # Kill it while deliveries are in flight: some answered, most not yet sent.
            await hooks.wait_for(EVENTS // 3, timeout=30)
            [process] = stack.processes
            process.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.proc.wait, 10)
            received_at_kill = len(hooks.requests)
            assert received_at_kill < EVENTS, "the kill came after every delivery"

            await asyncio.to_thread(stack.start_service, "notifier", "notifier_service")
            ids_of_job: dict[str, set[str]] = defaultdict(set)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ids_of_job.clear()
                for request in hooks.requests:
                    job_id = json.loads(request.body)["data"]["job_id"]
                    ids_of_job[job_id].add(request.headers["webhook-id"])
                if set(ids_of_job) == set(jobs):
                    break
                await asyncio.sleep(0.2)
        finally:
            stack.stop()

    assert set(ids_of_job) == set(jobs), f"{len(ids_of_job)} of {EVENTS} events delivered"
    assert all(len(ids) == 1 for ids in ids_of_job.values()), {
        job: ids for job, ids in ids_of_job.items() if len(ids) > 1}
    assert len(set.union(*ids_of_job.values())) == EVENTS  # one id per event
    # Repeats are the kill's in-flight sends only (answered, not yet recorded).
    repeats = len(hooks.requests) - EVENTS
    assert repeats <= 4, f"{repeats} repeats; at most the 4 sends in flight at the kill"
