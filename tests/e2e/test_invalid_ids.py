"""Commands published straight to NATS with ids that would break out of a subject or a key:
the services refuse them (a failure event to the user when the command names a valid
user and job, a logged dead letter otherwise), acknowledge them, and never build a
subject from them."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from nats.js.errors import NotFoundError

from contracts import topology
from contracts.ids import new_id
from tests.e2e.client import stored_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BAD_IDS = ["*", ">", "a.b", "", "x" * 200]


@pytest.fixture(scope="module")
def workers(stack):
    """Workers for this module only, stopped when it ends: other modules count on theirs."""
    started = [stack.start_service("prompt", "prompt_service"),
               stack.start_service("generator", "generator_service")]
    yield started
    for process in started:
        process.stop()


async def waiting(nc, consumer: topology.ConsumerSpec) -> int:
    info = await nc.jetstream().stream_info(consumer.stream, subjects_filter=consumer.filter_subject)
    return sum((info.state.subjects or {}).values())


async def publish_and_settle(nc, consumer: topology.ConsumerSpec, payload: dict) -> None:
    """Publish like an operator would, then wait until the workers took it off the queue."""
    await nc.jetstream().publish(consumer.filter_subject, json.dumps(payload).encode(),
                                 headers={"Nats-Msg-Id": new_id()})
    for _ in range(100):
        if await waiting(nc, consumer) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the command was never settled")


COMMANDS = {
    "prompt": (topology.PROMPT_WORKERS, lambda user, job: {
        "type": "prompt.optimize.v1", "user_id": user, "job_id": job, "prompt": "a cat"}),
    "generation": (topology.GENERATION_WORKERS, lambda user, job: {
        "type": "generation.generate.v1", "user_id": user, "job_id": job, "prompt": "a cat",
        "model": "schnell", "width": 256, "height": 256, "steps": 1, "seed": 1}),
}


@pytest.mark.parametrize("domain", sorted(COMMANDS))
@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_command_with_a_bad_user_id_is_dropped_without_an_event(nc, workers, domain,
                                                                        bad):
    consumer, command = COMMANDS[domain]
    job = new_id()
    before = (await nc.jetstream().stream_info(topology.EVENTS.name)).state.last_seq
    await publish_and_settle(nc, consumer, command(bad, job))
    await asyncio.sleep(0.3)
    js = nc.jetstream()
    last = (await js.stream_info(topology.EVENTS.name)).state.last_seq
    for seq in range(before + 1, last + 1):  # nothing about this job, on any subject
        with contextlib.suppress(NotFoundError):  # gone by retention: not ours either
            raw = await js.get_msg(topology.EVENTS.name, seq)
            assert job not in raw.data.decode(), raw.subject


@pytest.mark.parametrize("domain", sorted(COMMANDS))
async def test_a_command_with_a_bad_job_id_or_field_fails_its_user_once(nc, workers, domain):
    consumer, command = COMMANDS[domain]
    user, job = new_id(), new_id()
    payload = command(user, job) | {"prompt": ""}  # invalid: the user hears why
    await publish_and_settle(nc, consumer, payload)
    for _ in range(50):
        failed = await stored_events(nc, topology.event_subject(domain, "failed", user))
        if failed:
            break
        await asyncio.sleep(0.1)
    assert len(failed) == 1
    event = json.loads(failed[0].data)
    assert event["job_id"] == job and event["code"] == "invalid_input"
    assert "prompt" in event["reason"]
    # A bad job id with a good user: dropped (no subject or key can be built from it).
    await publish_and_settle(nc, consumer, command(user, "a.b"))
