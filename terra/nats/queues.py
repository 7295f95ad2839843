"""How many commands wait on a work queue: what positions and `terra status` report.

A work-queue stream keeps a command until a worker acks it, so the messages it holds on a
consumer's subject are exactly the commands waiting or in a worker's hands; the stream's
own count is exact once a publish is acked (a consumer's `num_pending` may lag it).
"""

from __future__ import annotations

from nats.js import JetStreamContext

from contracts.topology import ConsumerSpec


async def commands_waiting(js: JetStreamContext, consumer: ConsumerSpec) -> int:
    """Commands on `consumer`'s subject not yet acked: waiting, held or running."""
    info = await js.stream_info(consumer.stream, subjects_filter=consumer.filter_subject)
    return sum((info.state.subjects or {}).values())
