"""WebSocket tickets over a real nats-server, as two gateway replicas (each its own
connection with the gateway's credential): a ticket issued by one opens a socket on the
other, once; used many times at once, by both, it is redeemed exactly once. (That no
other identity's key reaches the bucket is the leaked-key battery's, `tests/attacks.py`,
which tries every bucket of the topology.)"""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js.errors import NoKeysError

from contracts import topology
from contracts.ids import new_id
from gateway.security import Caller
from gateway.tickets import InvalidTicket, WsTickets
from terra.nats.connection import jetstream

pytestmark = pytest.mark.integration

CALLER = Caller(user_id=new_id(), email="ada@example.com", token_id="jti-1",
                issued_at=1_800_000_000.0, expires_at=1_800_000_900.0)


@pytest.fixture
async def replicas(nats_endpoint):
    connections = [await nats_endpoint.connect(topology.GATEWAY) for _ in range(2)]
    yield [await WsTickets.open(jetstream(nc, topology.GATEWAY), 30) for nc in connections]
    for nc in connections:
        await nc.drain()


async def test_a_ticket_from_one_replica_opens_on_another_once(replicas):
    first, second = replicas
    ticket = await first.issue(CALLER)
    assert await second.redeem(ticket) == CALLER
    for replica in (first, second):
        with pytest.raises(InvalidTicket):
            await replica.redeem(ticket)


async def test_concurrent_uses_of_one_ticket_admit_exactly_one(replicas):
    for _ in range(5):
        ticket = await replicas[0].issue(CALLER)
        attempts = [replicas[i % 2].redeem(ticket) for i in range(16)]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        admitted = [o for o in outcomes if isinstance(o, Caller)]
        refused = [o for o in outcomes if isinstance(o, InvalidTicket)]
        assert len(admitted) == 1 and len(refused) == 15, outcomes


async def test_an_expired_ticket_is_refused(nats_endpoint):
    nc = await nats_endpoint.connect(topology.GATEWAY)
    try:
        tickets = await WsTickets.open(jetstream(nc, topology.GATEWAY), 0.2)
        ticket = await tickets.issue(CALLER)
        await asyncio.sleep(0.4)
        with pytest.raises(InvalidTicket, match="expired"):
            await tickets.redeem(ticket)
    finally:
        await nc.drain()


async def test_the_bucket_keeps_a_digest_a_ttl_and_no_used_ticket(nc, replicas):
    ticket = await replicas[0].issue(CALLER)
    kv = await nc.jetstream().key_value(topology.WS_TICKETS_KV.bucket)
    status = await kv.status()
    assert status.ttl == topology.WS_TICKETS_KV.ttl_s  # unused tickets are forgotten
    keys = [key async for key in _keys(kv)]
    assert all(ticket not in key for key in keys)
    stored = [json.loads((await kv.get(key)).value) for key in keys]
    assert all(ticket not in json.dumps(record) for record in stored)
    await replicas[1].redeem(ticket)
    assert len([key async for key in _keys(kv)]) == len(keys) - 1


async def _keys(kv):
    try:
        for key in await kv.keys():
            yield key
    except NoKeysError:
        return
