"""The revocation list over a real nats-server, with each side's own credential:
auth_service writes, the gateway's watch loads what exists, hears what comes, waits for
its own writes (`sync`), and starts over by itself when its consumer vanishes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contracts import topology
from contracts.base import new_id
from terra.revocations import Revocations, RevocationWatch
from terra.supervise import Supervisor

pytestmark = pytest.mark.integration


async def until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def auth(nats_endpoint):
    nc = await nats_endpoint.connect(topology.AUTH)
    yield await Revocations.open(nc.jetstream())
    await nc.drain()


@pytest.fixture
async def gateway(nats_endpoint):
    nc = await nats_endpoint.connect(topology.GATEWAY)
    yield nc
    await nc.drain()


async def test_the_watch_loads_hears_and_survives_losing_its_consumer(auth, gateway, nc):
    now = datetime.now(UTC)
    before, during, after = new_id(), new_id(), new_id()
    await auth.revoke(before, now - timedelta(seconds=30))

    watch = RevocationWatch(gateway, await Revocations.open(gateway.jetstream()),
                            heartbeat_s=0.2, retry_pause_s=0.1)
    heard: list[str] = []
    watch.on_revoked(lambda user_id, at: heard.append(user_id))
    supervisor = Supervisor()
    supervisor.start("revocations", watch.run)
    try:
        assert await watch.wait_caught_up(5)
        assert watch.known(before) == now - timedelta(seconds=30)

        await auth.revoke(during, now)
        assert await watch.sync()  # what was written before the call is here after it
        assert watch.known(during) == now and during in heard

        # The consumer vanishes (a node lost, an operator's mistake): the watch notices
        # the silence, starts over, and misses nothing written meanwhile.
        js = nc.jetstream()
        stream = f"KV_{topology.REVOCATIONS_KV.bucket}"
        for consumer in await js.consumers_info(stream):
            await js.delete_consumer(stream, consumer.name)
        await auth.revoke(after, now + timedelta(seconds=1))
        await until(lambda: watch.restarts >= 1)
        await until(lambda: watch.caught_up and watch.known(after) is not None)
        assert await watch.revoked_at(after) == now + timedelta(seconds=1)
        assert supervisor.healthy
    finally:
        await supervisor.stop()


async def test_until_caught_up_the_bucket_is_asked(auth, gateway):
    user = new_id()
    at = datetime.now(UTC)
    await auth.revoke(user, at)
    watch = RevocationWatch(gateway, await Revocations.open(gateway.jetstream()))
    assert not watch.caught_up  # never started
    assert await watch.revoked_at(user) == at
    assert await watch.revoked_at(new_id()) is None
