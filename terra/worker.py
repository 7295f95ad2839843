"""What every JetStream worker does with a command: settle it, and handle dead letters.

`settle` acks work that finished, naks a failed attempt with a growing delay (the
consumer's `max_deliver` bounds the attempts), and acks a command that can never
succeed after its handler has reported the failure. When attempts run out, the server
publishes a max-deliveries advisory; `watch_dead_letters` turns it into the service's
failure handling (job failed, `JobFailed` to the user) and removes the message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from faststream.nats import NatsMessage
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from contracts.topology import MAX_DELIVERIES_ADVISORY, ConsumerSpec
from terra.retry import retry_delay_s

log = logging.getLogger(__name__)


class PermanentFailure(Exception):
    """The command can never succeed (bad input); retrying is pointless."""


async def settle(msg: NatsMessage, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` (decoding included) and ack, nak with a delay, or ack a lost cause."""
    attempt = msg.raw_message.metadata.num_delivered
    try:
        await work()
    except PermanentFailure as exc:
        log.warning("command refused", extra={"reason": str(exc), "attempt": attempt})
        await msg.ack()
    except Exception:
        delay = retry_delay_s(attempt)
        log.exception("command failed; will retry", extra={"attempt": attempt, "delay_s": delay})
        await msg.nack(delay=delay)
    else:
        await msg.ack()


async def watch_dead_letters(
    nc: NatsClient,
    consumer: ConsumerSpec,
    on_dead_letter: Callable[[bytes], Awaitable[None]],
    *,
    queue: str,
):
    """Subscribe to the consumer's max-deliveries advisories (one replica per advisory)."""
    js = nc.jetstream()
    subject = f"{MAX_DELIVERIES_ADVISORY}.{consumer.stream}.{consumer.durable}"

    async def handle(advisory) -> None:
        details = json.loads(advisory.data)
        seq = details.get("stream_seq")
        log.error(
            "dead letter: deliveries exhausted",
            extra={"stream": consumer.stream, "consumer": consumer.durable, "stream_seq": seq,
                   "deliveries": details.get("deliveries")},
        )
        try:
            message = await js.get_msg(consumer.stream, seq)
        except NatsError:
            return  # already removed by another replica
        await on_dead_letter(message.data)
        try:
            await js.delete_msg(consumer.stream, seq)
        except NatsError:
            pass

    return await nc.subscribe(subject, queue=queue, cb=handle)


def durable_pull(broker, spec: ConsumerSpec, *, title: str, batch_size: int = 1,
                 max_workers: int = 1):
    """A FastStream subscriber bound to a provisioned durable consumer, acked by hand
    (`settle`). FastStream must not declare the stream: provisioning owns it."""
    from faststream import AckPolicy
    from faststream.nats import JStream, PullSub

    options = {"max_workers": max_workers} if max_workers > 1 else {}
    return broker.subscriber(
        spec.filter_subject, stream=JStream(spec.stream, declare=False), durable=spec.durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0), ack_policy=AckPolicy.MANUAL,
        title=title, **options)


def decode(model, body: bytes):
    """The message as `model`, or a `PermanentFailure` (retrying cannot fix bad bytes)."""
    try:
        return model.model_validate_json(body)
    except ValueError as exc:
        raise PermanentFailure(f"undecodable {model.__name__}: {exc}") from exc
