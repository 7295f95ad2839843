"""Commands from REST calls to their work queues, and waiting for what they caused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from faststream.nats import NatsBroker

from contracts import topology
from contracts.base import Command
from gateway.events import EventHub


def job_id_for(user_id: str, idempotency_key: str | None) -> str | None:
    """A retried request with the same `Idempotency-Key` names the same job."""
    if not idempotency_key:
        return None
    return hashlib.sha256(f"{user_id}\n{idempotency_key}".encode()).hexdigest()[:32]


async def send(broker: NatsBroker, command: Command) -> bool:
    """Publish to the command's work queue; False when the stream dropped it as a duplicate
    (same `Nats-Msg-Id` within the duplicate window: the job is already on its way)."""
    domain = command.subject().split(".")[2]
    ack = await broker.publish(
        command.model_dump_json().encode(),
        command.subject(),
        headers={"Nats-Msg-Id": command.message_id},
        correlation_id=command.correlation_id,
        stream=topology.COMMAND_STREAMS[domain].name,
        timeout=5.0,
    )
    return not ack.duplicate


async def wait_for_event(
    hub: EventHub, user_id: str, domain: str, job_id: str, types: set[str], timeout_s: float,
    subscription=None,
) -> dict | None:
    """The first event of `types` about `job_id`, or None after `timeout_s`.

    Pass a subscription made before the command was sent, or the event may come first.
    """
    sub = subscription or hub.subscribe(user_id, domain)
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(sub.queue.get(), left)
            except TimeoutError:
                return None
            payload = json.loads(event.data)
            if payload.get("job_id") == job_id and payload.get("type") in types:
                return payload
        return None
    finally:
        hub.unsubscribe(sub)
