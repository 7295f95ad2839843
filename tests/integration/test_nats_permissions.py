"""The permission matrix on a real nats-server: every identity can do what its code does,
and is refused what it must never do. Each identity signs in to its own account; inside
it, its user may publish only what the account imports and subscribe only to its inbox
and stream imports. A refusal is invisible to the caller (a timeout, or nothing at all
for a subscribe): the connection's error callback is what proves it.

The whole of each identity's path is exercised by the end-to-end suite, whose services
each sign in with their own credential; these probes pin the boundaries, and
`test_leaked_keys.py` tries everything else a leaked key could.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
import pytest

from contracts import topology as t
from contracts.permissions import OPERATOR, SERVICE_IDENTITIES, inbox_prefix
from terra.nats.connection import jetstream

pytestmark = pytest.mark.integration

Action = Callable[[nats.aio.client.Client], Awaitable[object]]


async def attempt(nats_endpoint, identity: str, action: Action) -> tuple[bool, list[str]]:
    """Run `action` as `identity`: (whether it completed, the violations the server
    reported on this connection)."""
    violations: list[str] = []

    async def on_error(error: Exception) -> None:
        violations.append(str(error).lower())

    nc = await nats_endpoint.connect(identity, error_cb=on_error)
    nc.terra_identity = identity  # which JetStream prefix `js` uses
    try:
        try:
            await asyncio.wait_for(action(nc), 1.0)
            completed = True
        except (TimeoutError, nats.errors.Error):
            completed = False
        await nc.flush(timeout=2)
        await asyncio.sleep(0.1)  # a subscribe violation arrives asynchronously
    finally:
        await nc.close()
    return completed, [v for v in violations if "permissions violation" in v]


async def assert_refused(nats_endpoint, identity: str, action: Action) -> None:
    """The server said no (the violation it reports is the proof: a refused publish
    only looks like a timeout, a refused subscribe like nothing at all)."""
    _, violations = await attempt(nats_endpoint, identity, action)
    assert violations, f"{identity} was not refused"


async def assert_allowed(nats_endpoint, identity: str, action: Action) -> None:
    completed, violations = await attempt(nats_endpoint, identity, action)
    assert completed and not violations, (identity, violations)


def js(nc):
    return jetstream(nc, nc.terra_identity, timeout=0.5)


async def read_kv(nc, bucket: str, key: str = "anything"):
    kv = await js(nc).key_value(bucket)
    try:
        await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        pass


async def write_kv(nc, bucket: str, key: str):
    await (await js(nc).key_value(bucket)).put(key, b"{}")


async def publish_js(nc, subject: str):
    await js(nc).publish(subject, b"{}", headers={"Nats-Msg-Id": f"probe-{subject}"})


async def fetch(nc, spec: t.ConsumerSpec):
    sub = await js(nc).pull_subscribe_bind(spec.durable, stream=spec.stream)
    try:
        await sub.fetch(1, timeout=0.2)
    except TimeoutError:
        pass  # nothing queued: allowed, just empty


async def subscribe(nc, subject: str):
    await nc.subscribe(subject)


async def test_an_anonymous_connection_is_refused(nats_endpoint):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_endpoint.url, allow_reconnect=False)


@pytest.mark.parametrize("identity", SERVICE_IDENTITIES)
async def test_no_service_reads_password_hashes_or_deletes_a_stream(nats_endpoint, identity):
    if identity != t.AUTH:
        await assert_refused(nats_endpoint, identity, lambda nc: read_kv(nc, t.USERS_KV.bucket))
        await assert_refused(nats_endpoint, identity,
                             lambda nc: read_kv(nc, t.CREDENTIALS_KV.bucket))
    await assert_refused(nats_endpoint, identity,
                         lambda nc: js(nc).delete_stream(t.GENERATION_COMMANDS.name))


@pytest.mark.parametrize("identity", SERVICE_IDENTITIES)
async def test_no_service_reads_another_ones_replies(nats_endpoint, identity):
    other = t.GATEWAY if identity != t.GATEWAY else t.AUTH
    await assert_refused(nats_endpoint, identity,
                         lambda nc: subscribe(nc, f"{inbox_prefix(other)}.>"))
    await assert_refused(nats_endpoint, identity, lambda nc: subscribe(nc, "_INBOX.>"))


async def test_the_gateway_asks_and_reads_but_cannot_act_as_a_service(nats_endpoint):
    gateway = t.GATEWAY
    for allowed in (lambda nc: read_kv(nc, t.GENERATION_JOBS_KV.bucket),
                    lambda nc: read_kv(nc, t.MODELS_KV.bucket),
                    lambda nc: publish_js(nc, t.command_subject("prompt", "optimize")),
                    lambda nc: js(nc).stream_info(t.EVENTS.name)):
        await assert_allowed(nats_endpoint, gateway, allowed)
    for refused in (
        lambda nc: subscribe(nc, "terra.rpc.auth.>"),  # requests carry passwords
        lambda nc: publish_js(nc, t.event_subject("account", "deleted", "someone")),
        lambda nc: publish_js(nc, t.event_subject("generation", "completed", "someone")),
        lambda nc: fetch(nc, t.GENERATION_WORKERS),
        lambda nc: read_kv(nc, t.REFRESH_TOKENS_KV.bucket),
        lambda nc: write_kv(nc, t.WORKERS_KV.bucket, "generator_service.fake"),
    ):
        await assert_refused(nats_endpoint, gateway, refused)


@pytest.mark.parametrize(("identity", "domain", "own", "foreign"), [
    (t.PROMPT, "prompt", t.PROMPT_WORKERS, t.TRAINING_WORKERS),
    (t.TRAINER, "training", t.TRAINING_WORKERS, t.GENERATION_WORKERS),
    (t.GENERATOR, "generation", t.GENERATION_WORKERS, t.PROMPT_WORKERS),
])
async def test_a_worker_takes_only_its_commands_and_tells_only_its_events(
        nats_endpoint, identity, domain, own, foreign):
    await assert_allowed(nats_endpoint, identity, lambda nc: fetch(nc, own))
    await assert_allowed(nats_endpoint, identity,
                         lambda nc: publish_js(nc, t.event_subject(domain, "progressed", "u1")))
    await assert_allowed(nats_endpoint, identity,
                         lambda nc: write_kv(nc, t.WORKERS_KV.bucket, f"{identity}.w1"))
    other_domain = next(d for d in ("prompt", "training", "generation") if d != domain)
    await assert_allowed(nats_endpoint, identity,
                         lambda nc: write_kv(nc, t.JOBS_KVS[domain].bucket, "u1.j1"))
    for refused in (
        lambda nc: fetch(nc, foreign),
        lambda nc: write_kv(nc, t.JOBS_KVS[other_domain].bucket, "u1.j1"),
        lambda nc: js(nc).add_consumer(own.stream, durable_name="mine"),
        lambda nc: publish_js(nc, t.event_subject(other_domain, "completed", "u1")),
        lambda nc: publish_js(nc, t.command_subject(domain, "cancel")),  # commands: gateway's
        lambda nc: write_kv(nc, t.WORKERS_KV.bucket, "someone_else.w1"),
        lambda nc: write_kv(nc, t.REVOCATIONS_KV.bucket, "user.u1"),
    ):
        await assert_refused(nats_endpoint, identity, refused)


async def test_only_the_owner_writes_models_and_images(nats_endpoint):
    await assert_allowed(nats_endpoint, t.TRAINER,
                         lambda nc: write_kv(nc, t.MODELS_KV.bucket, "u1.m1"))
    await assert_refused(nats_endpoint, t.GENERATOR,
                         lambda nc: write_kv(nc, t.MODELS_KV.bucket, "u1.m1"))
    await assert_allowed(nats_endpoint, t.GENERATOR,
                         lambda nc: write_kv(nc, t.IMAGES_KV.bucket, "u1.i1"))
    await assert_refused(nats_endpoint, t.TRAINER,
                         lambda nc: write_kv(nc, t.IMAGES_KV.bucket, "u1.i1"))


async def test_auth_service_keeps_to_accounts(nats_endpoint):
    await assert_allowed(nats_endpoint, t.AUTH, lambda nc: read_kv(nc, t.USERS_KV.bucket))
    await assert_allowed(nats_endpoint, t.AUTH,
                         lambda nc: write_kv(nc, t.REVOCATIONS_KV.bucket, "user.probe"))
    for refused in (lambda nc: read_kv(nc, t.GENERATION_JOBS_KV.bucket),
                    lambda nc: publish_js(nc, t.command_subject("generation", "generate")),
                    lambda nc: subscribe(nc, "terra.rpc.auth.register")):  # queue group only
        await assert_refused(nats_endpoint, t.AUTH, refused)


async def test_the_operator_may_do_anything(nats_endpoint):
    await assert_allowed(nats_endpoint, OPERATOR, lambda nc: read_kv(nc, t.USERS_KV.bucket))
    await assert_allowed(nats_endpoint, OPERATOR,
                         lambda nc: js(nc).stream_info(t.GENERATION_COMMANDS.name))
