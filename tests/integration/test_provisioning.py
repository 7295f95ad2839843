"""Provisioning against a real nats-server: creates, then changes nothing; refuses drift."""

from __future__ import annotations

import dataclasses

import nats.js.errors
import pytest
from nats.js import api

from contracts import topology
from contracts.ids import new_id
from contracts.jobs import JobKind, JobState
from contracts.topology import job_key
from terra.errors import ConfigurationError, ProvisioningConflict
from terra.nats.provisioning import (
    consumer_config,
    provision,
    require_provisioned,
    stream_config,
    verify,
    verify_identity,
)

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


async def test_a_stack_provisioned_before_the_accounts_is_brought_to_the_contract(fresh_nats):
    """An existing stack keeps its streams and data: the events stream and the revocation
    list start republishing, shared buckets stop taking rollups and keep one message per
    key, and every job recorded in the old shared bucket moves to its kind's bucket."""
    nc = await fresh_nats.connect()
    try:
        js = nc.jetstream()
        old_events = dataclasses.replace(topology.EVENTS, republish_to=None)
        await js.add_stream(stream_config(old_events, replicas=1))
        await js.create_key_value(api.KeyValueConfig(bucket=topology.MODELS_KV.bucket,
                                                     history=3))
        legacy = await js.create_key_value(api.KeyValueConfig(
            bucket=topology.LEGACY_JOBS_BUCKET, history=5))
        jobs = [JobState(job_id=new_id(), user_id="u1", kind=kind) for kind in JobKind]
        for job in jobs:
            await legacy.put(job_key(job.user_id, job.job_id), job.model_dump_json().encode())
        await legacy.put("u1.garbage", b"not a job")
        await js.publish("terra.evt.prompt.completed.u1", b"{}")  # kept: same stream

        report = await provision(nc, consumers=topology.CONSUMERS)

        events = (await js.stream_info(topology.EVENTS.name))
        assert events.state.messages == 1
        assert events.config.republish.dest == topology.EVENTS.republish_to
        models = (await js.stream_info(topology.MODELS_KV.stream)).config
        assert models.max_msgs_per_subject == 1 and not models.allow_rollup_hdrs
        revocations = (await js.stream_info(topology.REVOCATIONS_KV.stream)).config
        assert revocations.republish.dest == topology.REVOCATIONS_KV.republish_to
        for job in jobs:
            bucket = await js.key_value(topology.JOBS_KVS[job.kind.value].bucket)
            moved = await bucket.get(job_key(job.user_id, job.job_id))
            assert JobState.model_validate_json(moved.value) == job
        with pytest.raises(nats.js.errors.BucketNotFoundError):
            await js.key_value(topology.LEGACY_JOBS_BUCKET)
        assert any("3 job records moved" in line for line in report.updated), report.updated

        again = await provision(nc, consumers=topology.CONSUMERS)
        assert again.created == again.updated == []
    finally:
        await nc.drain()


async def test_a_durable_that_differs_in_any_field_is_refused_at_a_services_start(fresh_nats):
    """A service reads its durables' whole configuration at start: one whose filter,
    delivery or expiry was changed behind its back (before the accounts, the gateway's
    key could do that) is reported, and the service does not start on it."""
    nc = await fresh_nats.connect()
    prompt = await fresh_nats.connect(topology.PROMPT)  # as the service itself
    try:
        await provision(nc, consumers=topology.CONSUMERS)
        assert await verify_identity(prompt, topology.PROMPT) == []
        cleanup = topology.account_cleanup_consumer("prompt")
        config = consumer_config(cleanup)
        config.filter_subject = "terra.evt.nothing.*.*"
        await nc.jetstream().add_consumer(cleanup.stream, config)
        with pytest.raises(ConfigurationError, match="filter_subject"):
            await require_provisioned(prompt, topology.PROMPT)
    finally:
        await prompt.drain()
        await nc.drain()
