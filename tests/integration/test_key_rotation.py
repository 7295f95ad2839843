"""Rotating an identity's NATS key on a running server, with no downtime: after `rotate`
and a reload both keys sign in to the identity's own account (and reach what it imports);
after `retire` and a reload only the new one does."""

from __future__ import annotations

import asyncio
import signal

import nats
import pytest

from contracts import topology as t
from contracts.permissions import OPERATOR, inbox_prefix
from terra.nats.connection import jetstream
from terra.nats.provisioning import provision
from terra.ops.servers import EmbeddedNats

pytestmark = pytest.mark.integration


async def reaches_its_streams(server: EmbeddedNats, seed: str) -> bool:
    """Whether `seed` signs in as the gateway and reaches what the gateway's account
    imports (the events stream's state)."""
    try:
        nc = await nats.connect(server.url, nkeys_seed_str=seed, allow_reconnect=False,
                                inbox_prefix=inbox_prefix(t.GATEWAY), connect_timeout=2)
    except (nats.errors.Error, OSError):
        return False
    try:
        info = await jetstream(nc, t.GATEWAY, timeout=2).stream_info(t.EVENTS.name)
        return info.config.name == t.EVENTS.name
    finally:
        await nc.close()


async def reload(server: EmbeddedNats) -> None:
    server.server.proc.send_signal(signal.SIGHUP)  # what `nats-server --signal reload` sends
    await asyncio.sleep(0.5)


async def test_a_rotated_key_works_beside_the_old_until_it_is_retired(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        operator = await nats.connect(server.url, inbox_prefix=inbox_prefix(OPERATOR),
                                      nkeys_seed=str(server.credentials.seed_file(OPERATOR)))
        await provision(operator)
        await operator.close()
        credentials = server.credentials
        old = credentials.seed_file(t.GATEWAY).read_text().strip()
        assert await reaches_its_streams(server, old)

        credentials.rotate(t.GATEWAY)
        new = credentials.seed_file(t.GATEWAY).read_text().strip()
        await reload(server)
        assert await reaches_its_streams(server, new)
        assert await reaches_its_streams(server, old)  # processes not yet restarted

        credentials.retire(t.GATEWAY)
        await reload(server)
        assert await reaches_its_streams(server, new)
        assert not await reaches_its_streams(server, old)
    finally:
        server.stop()
