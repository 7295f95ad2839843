"""A command whose deliveries run out reaches the service's failure handling and leaves
the work queue; it is neither lost silently nor retried forever."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from contracts.topology import (
    MAX_DELIVERIES_ADVISORY,
    PROMPT_COMMANDS,
    ConsumerSpec,
    command_subject,
)
from terra.nats.provisioning import provision
from terra.runtime.worker import watch_dead_letters

pytestmark = pytest.mark.integration


async def test_exhausted_deliveries_are_handed_over_and_removed(fresh_nats):
    nc = await fresh_nats.connect()
    try:
        spec = ConsumerSpec(stream=PROMPT_COMMANDS.name, durable="dead_letter_test",
                            filter_subject=command_subject("prompt", "optimize"),
                            ack_wait_s=0.5, max_deliver=2)
        await provision(nc, streams=[PROMPT_COMMANDS], consumers=[spec], kv_buckets=[])
        js = nc.jetstream()
        handed_over: asyncio.Queue[bytes] = asyncio.Queue()
        await watch_dead_letters(nc, js, spec, handed_over.put, queue="test")

        await js.publish(spec.filter_subject, b'{"poison": true}')
        pull = await js.pull_subscribe_bind(spec.durable, stream=spec.stream)
        for _ in range(spec.max_deliver):  # every attempt fails
            [msg] = await pull.fetch(1, timeout=5)
            await msg.nak()
        # A worker keeps pulling; the server gives up on the message instead of sending it.
        with pytest.raises(nats.errors.TimeoutError):
            await pull.fetch(1, timeout=1)

        assert await asyncio.wait_for(handed_over.get(), 5) == b'{"poison": true}'
        for _ in range(100):  # the watcher removes it once handed over: a moment later
            if (await js.stream_info(spec.stream)).state.messages == 0:
                break
            await asyncio.sleep(0.05)
        assert (await js.stream_info(spec.stream)).state.messages == 0
        await pull.unsubscribe()
    finally:
        await nc.close()


async def test_an_advisory_that_is_not_about_this_consumer_changes_nothing(fresh_nats):
    """A forged advisory (garbage, another consumer's, a message outside the consumer's
    subjects) is logged and dropped: no job is failed, no command removed."""
    nc = await fresh_nats.connect()
    try:
        spec = ConsumerSpec(stream=PROMPT_COMMANDS.name, durable="dead_letter_forged",
                            filter_subject=command_subject("prompt", "optimize"))
        await provision(nc, streams=[PROMPT_COMMANDS], consumers=[spec], kv_buckets=[])
        js = nc.jetstream()
        handed_over: asyncio.Queue[bytes] = asyncio.Queue()
        await watch_dead_letters(nc, js, spec, handed_over.put, queue="test")
        other = await js.publish(command_subject("prompt", "cancel"), b'{"not": "mine"}')
        mine = await js.publish(spec.filter_subject, b'{"work": true}')

        subject = f"{MAX_DELIVERIES_ADVISORY}.{spec.stream}.{spec.durable}"
        forged = [
            b'{"type":"io.nats.jetstream.api.v1.stream_info_response"}',  # an API answer
            b"not json",
            advisory(spec.stream, "someone_elses_durable", mine.seq),
            advisory("TERRA_TRAINING_COMMANDS", spec.durable, mine.seq),
            advisory(spec.stream, spec.durable, other.seq),  # outside its subjects
            advisory(spec.stream, spec.durable, 10_000),  # no such message
        ]
        for data in forged:
            await nc.publish(subject, data)
        await nc.flush()
        await asyncio.sleep(0.5)
        assert handed_over.empty()
        assert (await js.stream_info(spec.stream)).state.messages == 2
    finally:
        await nc.close()


def advisory(stream: str, consumer: str, seq: int) -> bytes:
    return json.dumps({"type": "io.nats.jetstream.advisory.v1.max_deliver", "stream": stream,
                       "consumer": consumer, "stream_seq": seq, "deliveries": 5}).encode()
