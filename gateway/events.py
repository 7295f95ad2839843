"""Events from the JetStream events stream to WebSocket subscribers.

Each gateway process runs one ordered JetStream consumer on all events (deliver new) and
hands each event to the queues of the sockets its owner has open here; dispatch never
waits on a socket. A socket that falls `queue_size` events behind is closed, and its
client reconnects with `since` to get the rest from the stream. Replay reads the
user's own subjects from the stream by sequence (`STREAM.MSG.GET` next-by-subject), so a
socket never sees another user's events.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace

from contracts import topology

log = logging.getLogger(__name__)
tracer = trace.get_tracer("terra.gateway.events")


@dataclass(frozen=True)
class Delivered:
    """One event as a socket sends it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] | None = None

    def frame(self) -> str:
        payload = json.loads(self.data)
        return json.dumps(
            {
                "seq": self.seq,
                "type": payload.get("type"),
                "job_id": payload.get("job_id"),
                "domain": topology.event_domain(self.subject),
                "payload": payload,
            }
        )


class Overflow(Exception):
    """The socket's buffer is full: the client is too slow."""


@dataclass(eq=False)
class Subscription:
    user_id: str
    domain: str | None  # None: every domain
    queue: asyncio.Queue[Delivered]
    overflowed: bool = False

    def wants(self, subject: str) -> bool:
        return self.domain is None or topology.event_domain(subject) == self.domain

    def offer(self, event: Delivered) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The writer sees the flag at its next event and closes the socket.
            self.overflowed = True


class EventHub:
    def __init__(self, nc: NatsClient, queue_size: int = 256) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._queue_size = queue_size
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)
        self._sub = None

    async def start(self) -> None:
        self._sub = await self._js.subscribe(
            f"{topology.PREFIX}.evt.>",
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            cb=self._on_event,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    @property
    def sockets(self) -> int:
        return sum(len(subs) for subs in self._by_user.values())

    def subscribe(self, user_id: str, domain: str | None) -> Subscription:
        subscription = Subscription(user_id, domain, asyncio.Queue(self._queue_size))
        self._by_user[user_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self._by_user.get(subscription.user_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._by_user[subscription.user_id]

    async def _on_event(self, msg) -> None:
        subs = self._by_user.get(topology.event_owner(msg.subject))
        if not subs:
            return
        event = Delivered(msg.metadata.sequence.stream, msg.subject, msg.data, msg.headers)
        for subscription in subs:
            if subscription.wants(msg.subject):
                subscription.offer(event)

    async def last_sequence(self) -> int:
        info = await self._js.stream_info(topology.EVENTS.name)
        return info.state.last_seq

    async def replay(
        self, user_id: str, domain: str | None, after_seq: int, up_to_seq: int, limit: int
    ) -> list[Delivered]:
        """The user's events with after_seq < seq <= up_to_seq, oldest first."""
        subject = topology.user_events_filter(user_id, domain)
        events: list[Delivered] = []
        cursor = after_seq + 1
        while cursor <= up_to_seq and len(events) < limit:
            try:
                raw = await self._js.get_msg(
                    topology.EVENTS.name, seq=cursor, subject=subject, next=True
                )
            except NotFoundError:
                break
            if raw.seq > up_to_seq:
                break
            events.append(Delivered(raw.seq, raw.subject, raw.data, dict(raw.headers or {})))
            cursor = raw.seq + 1
        return events


def continue_trace(event: Delivered):
    """A span for the push, child of the trace that produced the event."""
    context = propagate.extract(event.headers or {})
    return tracer.start_as_current_span(
        "ws.push", context=context, attributes={"messaging.message.id": str(event.seq)}
    )
