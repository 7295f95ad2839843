"""Provisioning against a real nats-server: creates, then changes nothing; refuses drift."""

from __future__ import annotations

import dataclasses

import pytest

from contracts import topology
from terra.errors import ProvisioningConflict
from terra.provisioning import provision, verify

pytestmark = pytest.mark.integration


async def _snapshot(js) -> dict:
    streams = {}
    for spec in topology.STREAMS + tuple(
        dataclasses.replace(topology.EVENTS, name=f"KV_{kv.bucket}") for kv in topology.KV_BUCKETS
    ):
        info = await js.stream_info(spec.name)
        streams[spec.name] = (info.config.as_dict(), info.state.messages)
    return streams


async def test_provisioning_twice_is_a_no_op(fresh_nats):
    nc = await fresh_nats.connect()
    try:
        assert await verify(nc) != []
        first = await provision(nc, consumers=topology.CONSUMERS)
        assert len(first.created) == len(topology.STREAMS) + len(topology.KV_BUCKETS) + len(
            topology.CONSUMERS
        )
        js = nc.jetstream()
        before = await _snapshot(js)
        consumer_before = (await js.consumer_info(
            topology.PROMPT_WORKERS.stream, topology.PROMPT_WORKERS.durable
        )).config.as_dict()

        second = await provision(nc, consumers=topology.CONSUMERS)

        assert second.created == []
        assert len(second.unchanged) == len(first.created)
        assert await _snapshot(js) == before
        consumer_after = (await js.consumer_info(
            topology.PROMPT_WORKERS.stream, topology.PROMPT_WORKERS.durable
        )).config.as_dict()
        assert consumer_after == consumer_before
        assert await verify(nc) == []
    finally:
        await nc.drain()


async def test_work_queues_dedupe_on_message_id(fresh_nats):
    nc = await fresh_nats.connect()
    try:
        await provision(nc)
        js = nc.jetstream()
        subject = topology.command_subject("generation", "generate")
        first = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "cmd-1"})
        retry = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": "cmd-1"})
        assert not first.duplicate and retry.duplicate
        info = await js.stream_info(topology.GENERATION_COMMANDS.name)
        assert info.state.messages == 1
    finally:
        await nc.drain()


async def test_an_incompatible_stream_is_reported_not_replaced(fresh_nats):
    nc = await fresh_nats.connect()
    try:
        js = nc.jetstream()
        # Someone created the events stream by hand with a one-hour retention.
        await js.add_stream(name=topology.EVENTS.name, subjects=["terra.evt.>"], max_age=3600)
        with pytest.raises(ProvisioningConflict) as raised:
            await provision(nc)
        message = str(raised.value)
        assert topology.EVENTS.name in message and "max_age" in message
        info = await js.stream_info(topology.EVENTS.name)
        assert info.config.max_age == pytest.approx(3600)
    finally:
        await nc.drain()


async def test_an_incompatible_consumer_is_reported(fresh_nats):
    nc = await fresh_nats.connect()
    try:
        await provision(nc)
        drifted = dataclasses.replace(topology.PROMPT_WORKERS,
                                      filter_subject="terra.cmd.prompt.optimize")
        await provision(nc, consumers=[drifted])
        with pytest.raises(ProvisioningConflict, match="filter_subject"):
            await provision(nc, consumers=[topology.PROMPT_WORKERS])
        info = await nc.jetstream().consumer_info(drifted.stream, drifted.durable)
        assert info.config.filter_subject == "terra.cmd.prompt.optimize"  # left as it was
    finally:
        await nc.drain()


async def test_limits_a_consumer_can_change_in_place_are_updated(fresh_nats):
    """Redelivery limits and timers change without losing a message or a position."""
    nc = await fresh_nats.connect()
    try:
        await provision(nc)
        older = dataclasses.replace(topology.GENERATION_WORKERS, max_deliver=2, ack_wait_s=10)
        await provision(nc, consumers=[older])
        report = await provision(nc, consumers=[topology.GENERATION_WORKERS])
        assert report.updated and "max_deliver" in report.updated[0]
        info = await nc.jetstream().consumer_info(older.stream, older.durable)
        assert info.config.max_deliver == topology.GENERATION_WORKERS.max_deliver
        assert info.config.ack_wait == pytest.approx(topology.GENERATION_WORKERS.ack_wait_s)
    finally:
        await nc.drain()
