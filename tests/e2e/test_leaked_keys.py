"""The attacks that worked with one leaked key before the accounts, replayed against the
running stack, each checked from outside: the victim still signs in, their jobs still
run, every durable is still as the contract says.

1. The generator's key writes a delete-account request under a job key of its own and
   creates a push consumer delivering it to auth's delete request, in auth's queue group.
2. Any key answers a JetStream API request onto a user record, a deleted-account mark, a
   revocation or another domain's event.
3. The gateway's key rewrites another service's durable in place, or deletes it.
B2. The gateway's key aims an API answer at auth's delete request (it may call auth).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from contracts import topology as t
from contracts.ids import new_id
from contracts.permissions import IMPORTED_API
from terra.nats.connection import jetstream
from terra.nats.provisioning import consumer_differences
from tests.e2e.client import PASSWORD, register

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prompt_worker(stack):
    return stack.start_service("prompt", "prompt_service")


@pytest.fixture
async def victim(http, prompt_worker):
    return await register(http)


async def still_whole(http, nc, victim) -> None:
    """Seen from outside: the victim signs in, a job of theirs runs to its end, and no
    mark of deletion or revocation was written for them."""
    login = await http.post("/api/auth/login", json={"email": victim.email,
                                                      "password": PASSWORD})
    assert login.status_code == 200, login.text
    me = await http.get("/api/me", headers=victim.headers)
    assert me.status_code == 200 and me.json()["id"] == victim.user_id
    job = await http.post("/api/prompt/optimize", params={"wait": "true"},
                          json={"prompt": "a red kite over the sea"}, headers=victim.headers)
    assert job.status_code == 200, job.text
    js = nc.jetstream()
    for bucket, key in ((t.DELETED_ACCOUNTS_KV, t.deleted_account_key(victim.user_id)),
                        (t.REVOCATIONS_KV, t.revocation_key(victim.user_id))):
        with pytest.raises(Exception, match="not found|NotFound"):
            await (await js.key_value(bucket.bucket)).get(key)
    for spec in t.CONSUMERS:
        info = await js.consumer_info(spec.stream, spec.durable)
        assert consumer_differences(spec, info.config) == {}, spec.durable


async def test_the_generators_key_cannot_deliver_a_deletion_to_auth(
        http, nats_endpoint, nc, victim):
    stream = t.GENERATION_JOBS_KV.stream
    before = {c.name for c in await nc.jetstream().consumers_info(stream)}
    generator = await nats_endpoint.connect(t.GENERATOR)
    try:
        js = jetstream(generator, t.GENERATOR)
        jobs = await js.key_value(t.GENERATION_JOBS_KV.bucket)  # its own bucket: allowed
        key = f"{new_id()}.{new_id()}"
        await jobs.put(key, json.dumps({"type": "auth.delete_account.v1",
                                        "user_id": victim.user_id}).encode())
        config = {"deliver_subject": t.AuthRpc.DELETE_ACCOUNT.value,
                  "deliver_group": t.AUTH_QUEUE_GROUP, "ack_policy": "none",
                  "filter_subject": f"$KV.{t.GENERATION_JOBS_KV.bucket}.{key}"}
        for prefix in (IMPORTED_API, "$JS.API"):
            subject = f"{prefix}.CONSUMER.CREATE.{t.GENERATION_JOBS_KV.stream}"
            await generator.publish(subject, json.dumps({
                "stream_name": t.GENERATION_JOBS_KV.stream, "config": config}).encode())
        await generator.flush()
        await asyncio.sleep(1.0)
        # Other tests' operator listings may hold ephemeral consumers here: none is new,
        # and none delivers to auth.
        after = await nc.jetstream().consumers_info(stream)
        assert {c.name for c in after} <= before
        assert not any(c.config.deliver_subject == t.AuthRpc.DELETE_ACCOUNT.value
                       for c in after)
    finally:
        await generator.close()
    await still_whole(http, nc, victim)


@pytest.mark.parametrize("identity", [t.GENERATOR, t.GATEWAY, t.PROMPT])
async def test_no_key_answers_an_api_call_onto_anothers_records(
        http, nats_endpoint, nc, victim, identity):
    attacker = await nats_endpoint.connect(identity)
    user = victim.user_id
    targets = [f"$KV.{t.USERS_KV.bucket}.{user}",
               f"$KV.{t.DELETED_ACCOUNTS_KV.bucket}.{t.deleted_account_key(user)}",
               f"$KV.{t.REVOCATIONS_KV.bucket}.{t.revocation_key(user)}",
               t.event_subject("training", "completed", user),
               t.event_subject("account", "deleted", user)]
    try:
        for target in targets:
            for call in (f"{IMPORTED_API}.STREAM.INFO.{t.WORKERS_KV.stream}",
                         f"$JS.API.STREAM.INFO.{t.WORKERS_KV.stream}"):
                await attacker.publish(call, b"", reply=target)
        await attacker.flush()
        await asyncio.sleep(0.5)
    finally:
        await attacker.close()
    events = await nc.jetstream().stream_info(t.EVENTS.name,
                                              subjects_filter=t.user_events_filter(user))
    assert not any(".training." in s or ".deleted." in s
                   for s in (events.state.subjects or {})), events.state.subjects
    users = await nc.jetstream().key_value(t.USERS_KV.bucket)
    assert json.loads((await users.get(user)).value)["id"] == user  # the record, unharmed
    await still_whole(http, nc, victim)


async def test_the_gateways_key_cannot_rewrite_or_delete_a_services_durable(
        http, nats_endpoint, nc, victim):
    gateway = await nats_endpoint.connect(t.GATEWAY)
    prompt_cleanup = t.account_cleanup_consumer("prompt")
    generator_cleanup = t.account_cleanup_consumer("generator")
    try:
        for prefix in (IMPORTED_API, "$JS.API"):
            await gateway.publish(
                f"{prefix}.CONSUMER.CREATE.{t.EVENTS.name}.{prompt_cleanup.durable}",
                json.dumps({"stream_name": t.EVENTS.name, "config": {
                    "durable_name": prompt_cleanup.durable, "ack_policy": "explicit",
                    "filter_subject": "terra.evt.nothing.*.*"}}).encode())
            await gateway.publish(
                f"{prefix}.CONSUMER.DELETE.{t.EVENTS.name}.{generator_cleanup.durable}")
        await gateway.flush()
        await asyncio.sleep(0.5)
    finally:
        await gateway.close()
    await still_whole(http, nc, victim)  # every durable as the contract says


async def test_the_gateways_key_cannot_aim_an_api_answer_at_auth(
        http, nats_endpoint, nc, victim):
    """Auth answers only requests: a message with no reply subject (an API answer someone
    aimed at its subject, a delivery) is dropped unread."""
    gateway = await nats_endpoint.connect(t.GATEWAY)
    try:
        await gateway.publish(f"{IMPORTED_API}.STREAM.INFO.{t.EVENTS.name}", b"",
                              reply=t.AuthRpc.DELETE_ACCOUNT.value)
        # The same, as a plain message with no reply, carrying a valid-looking request.
        await gateway.publish(t.AuthRpc.DELETE_ACCOUNT.value, json.dumps(
            {"type": "auth.delete_account.v1", "user_id": victim.user_id}).encode())
        await gateway.flush()
        await asyncio.sleep(0.5)
    finally:
        await gateway.close()
    await still_whole(http, nc, victim)

