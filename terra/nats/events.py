"""Publishing domain events: to the events stream, deduplicated by message id, carrying
the current trace context so the consumer's span (and the WebSocket push) joins it.

A publish that meets a broker fault (a stream leader election, a reconnect) is retried
for up to `retry_for_s`: every event has a fixed message id, so a retry can never make a
second copy, and an ending that was recorded is not lost to a few seconds without a
leader.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import propagate

from contracts.base import Event
from terra.backoff import retry_while
from terra.nats.faults import is_broker_fault

log = logging.getLogger(__name__)

class EventPublisher:
    def __init__(self, js: JetStreamContext, *, retry_for_s: float = 15.0,
                 ack_timeout_s: float = 2.0) -> None:
        self._js = js
        self.retry_for_s = retry_for_s
        self.ack_timeout_s = ack_timeout_s

    async def publish(self, event: Event) -> PubAck:
        headers = {"Nats-Msg-Id": event.message_id, "Content-Type": "application/json"}
        propagate.inject(headers)
        subject, data = event.subject(), event.model_dump_json().encode()
        return await publish_with_retry(self._js, subject, data, headers,
                                        retry_for_s=self.retry_for_s,
                                        ack_timeout_s=self.ack_timeout_s)


async def publish_with_retry(js: JetStreamContext, subject: str, data: bytes,
                             headers: dict[str, str], *, retry_for_s: float,
                             ack_timeout_s: float, stream: str | None = None) -> PubAck:
    """`js.publish`, retried on broker faults until `retry_for_s` has passed. Callers must
    set `Nats-Msg-Id`, or a retry after a lost ack could store the message twice."""
    return await retry_while(
        lambda: js.publish(subject, data, timeout=ack_timeout_s, stream=stream,
                           headers=headers),
        is_broker_fault, wait_s=retry_for_s, first_pause_s=0.1, max_pause_s=1.0,
        what="publish failed", extra={"subject": subject})


