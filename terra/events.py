"""Publishing domain events: to the events stream, deduplicated by message id, carrying
the current trace context so the consumer's span (and the WebSocket push) joins it."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import propagate

from contracts.base import Event


class EventPublisher:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def publish(self, event: Event) -> PubAck:
        headers = {"Nats-Msg-Id": event.message_id, "Content-Type": "application/json"}
        propagate.inject(headers)
        return await self._js.publish(
            event.subject(), event.model_dump_json().encode(), headers=headers
        )
