"""The revocation list over a real nats-server, with each side's own credential:
auth_service writes, the gateway's watch loads what exists, hears what comes (the
bucket's republished copies; it may create no consumer), waits for its own writes
(`sync`), reads by sequence what it did not hear, and fails closed on an entry it
cannot read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contracts import topology
from contracts.ids import new_id
from terra.nats.connection import jetstream
from terra.records.revocations import UNREADABLE, Revocations, RevocationWatch, is_revoked
from terra.runtime.supervise import Supervisor

pytestmark = pytest.mark.integration


async def until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def auth(nats_endpoint):
    nc = await nats_endpoint.connect(topology.AUTH)
    yield await Revocations.open(jetstream(nc, topology.AUTH))
    await nc.drain()


@pytest.fixture
async def gateway(nats_endpoint):
    nc = await nats_endpoint.connect(topology.GATEWAY)
    yield nc
    await nc.drain()


async def started_watch(gateway, **options) -> tuple[RevocationWatch, Supervisor]:
    js = jetstream(gateway, topology.GATEWAY)
    watch = RevocationWatch(gateway, js, await Revocations.open(js), **options)
    supervisor = Supervisor()
    supervisor.start("revocations", watch.run)
    assert await watch.wait_caught_up(5)
    return watch, supervisor


async def test_the_watch_loads_hears_and_reads_what_it_did_not_hear(auth, gateway, nc):
    now = datetime.now(UTC)
    before, during, unheard = new_id(), new_id(), new_id()
    await auth.revoke(before, now - timedelta(seconds=30))

    watch, supervisor = await started_watch(gateway, quiet_s=0.2, retry_pause_s=0.1)
    heard: list[str] = []
    watch.on_revoked(lambda user_id, at: heard.append(user_id))
    try:
        assert watch.known(before) == now - timedelta(seconds=30)

        await auth.revoke(during, now)
        assert await watch.sync()  # what was written before the call is here after it
        assert watch.known(during) == now and during in heard

        # A copy that never arrives (a reconnect, a slow subscriber): the operator writes
        # with republishing switched off for a moment, as if the copy had been lost.
        js = nc.jetstream()
        config = (await js.stream_info(topology.REVOCATIONS_KV.stream)).config
        await js.update_stream(config.evolve(republish=None))
        try:
            await auth.revoke(unheard, now + timedelta(seconds=1))
        finally:
            await js.update_stream(config)
        await until(lambda: watch.known(unheard) is not None)  # read at the next quiet spell
        assert watch.known(unheard) == now + timedelta(seconds=1) and unheard in heard
        assert supervisor.healthy and watch.restarts == 0
    finally:
        await supervisor.stop()


async def test_an_unreadable_entry_refuses_every_token_of_its_user(auth, gateway, nc):
    """Fail closed: only auth_service writes the bucket, so garbage there is damage or an
    attack, and no token of that user passes until auth writes a real time again."""
    victim, damaged_later = new_id(), new_id()
    kv = await nc.jetstream().key_value(topology.REVOCATIONS_KV.bucket)
    await kv.put(topology.revocation_key(victim), b'{"type":"io.nats.jetstream.api.v1"}')
    watch, supervisor = await started_watch(gateway, quiet_s=0.2)
    try:
        assert watch.known(victim) == UNREADABLE  # loaded from the listing
        assert is_revoked(datetime.now(UTC).timestamp() + 3600, watch.known(victim))
        await kv.put(topology.revocation_key(damaged_later), b"\xff\xfe")
        await until(lambda: watch.known(damaged_later) == UNREADABLE)  # heard live

        at = datetime.now(UTC)
        assert await auth.revoke(victim, at) == at  # auth's next write repairs it
        assert (await auth.revoked_at(victim)) == at
        await until(lambda: watch.known(victim) == at)  # and the gateways learn it
    finally:
        await supervisor.stop()


async def test_until_caught_up_the_bucket_is_asked(auth, gateway):
    user = new_id()
    at = datetime.now(UTC)
    await auth.revoke(user, at)
    js = jetstream(gateway, topology.GATEWAY)
    watch = RevocationWatch(gateway, js, await Revocations.open(js))
    assert not watch.caught_up  # never started
    assert await watch.revoked_at(user) == at
    assert await watch.revoked_at(new_id()) is None
