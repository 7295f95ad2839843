"""Events from the JetStream events stream to WebSocket subscribers.

Each gateway process runs one fan-out loop (supervised, see `terra.supervise`): an
ephemeral push consumer on every event, delivered to a private inbox with idle
heartbeats, whose events go to the queues of the sockets their owner has open here;
dispatch never waits on a socket. The loop checks the consumer sequence of every
delivery and heartbeat: a gap, or silence longer than a few heartbeats (the node holding
the consumer died, the stream changed leader), makes it start a new consumer right after
the last event it dispatched. So a node loss costs seconds, and a socket sees every
event once. A socket that falls `queue_size` events behind is closed, and its client
reconnects with `since` to get the rest from the stream. Replay reads the user's own
subjects by sequence (`STREAM.MSG.GET` next-by-subject), so a socket never sees another
user's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace

from contracts import topology
from terra.events import is_broker_fault
from terra.push import CheckedPush, Restart
from terra.retry import retry_while
from terra.supervise import Supervisor

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


@dataclass(eq=False)
class Subscription:
    user_id: str
    domain: str | None  # None: every domain
    queue: asyncio.Queue[Delivered]
    overflowed: bool = False
    # A socket's: when its token was issued. A revocation of the user's sessions after
    # that ends the subscription (`ended` is set, the socket closes).
    issued_at: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

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

    def discard(self) -> None:
        """Drop what is buffered: its socket is closing and sends none of it."""
        while not self.queue.empty():
            self.queue.get_nowait()


class EventHub:
    def __init__(self, nc: NatsClient, queue_size: int = 256, *,
                 js: JetStreamContext | None = None, heartbeat_s: float = 0.5,
                 supervisor: Supervisor | None = None) -> None:
        self._nc = nc
        self._js = js or nc.jetstream()
        self._queue_size = queue_size
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)
        self.heartbeat_s = heartbeat_s
        self._supervisor = supervisor or Supervisor()
        self._owns_supervisor = supervisor is None
        self.last_seq: int | None = None  # the last event dispatched (or seen at start)
        self.restarts = 0
        self._consuming = asyncio.Event()  # set once the first consumer exists

    async def start(self, wait_s: float = 10.0) -> None:
        """Start the fan-out, and wait (a while) for its first consumer: events published
        once this returns reach the sockets."""
        self._supervisor.start("event-fanout", self.run)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._consuming.wait(), wait_s)

    async def stop(self) -> None:
        if self._owns_supervisor:
            await self._supervisor.stop()

    @property
    def sockets(self) -> int:
        return sum(len(subs) for subs in self._by_user.values())

    def subscribe(self, user_id: str, domain: str | None, *,
                  issued_at: float | None = None) -> Subscription:
        subscription = Subscription(user_id, domain, asyncio.Queue(self._queue_size),
                                    issued_at=issued_at)
        self._by_user[user_id].add(subscription)
        return subscription

    def end_sessions(self, user_id: str, issued_up_to: float) -> int:
        """The user's sessions were revoked: end the subscriptions of sockets whose token
        was issued at or before `issued_up_to` (nothing more is queued to them, their
        buffered events are dropped and their sockets close). Returns how many."""
        ended = [sub for sub in self._by_user.get(user_id, ())
                 if sub.issued_at is not None and sub.issued_at <= issued_up_to]
        for subscription in ended:
            self.unsubscribe(subscription)
            subscription.discard()
            subscription.ended.set()
        return len(ended)

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self._by_user.get(subscription.user_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._by_user[subscription.user_id]

    # --- the fan-out loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Forever: a consumer from just after the last event, its deliveries dispatched,
        a new one whenever it falls silent or skips."""
        while True:
            push = CheckedPush(self._nc, self._js, topology.EVENTS.name,
                               heartbeat_s=self.heartbeat_s)
            try:
                await self._open(push)
                async for msg in push.messages():
                    if msg is not None:
                        self._take(msg)
            except Restart as why:
                self.restarts += 1
                log.warning("event consumer restarted", extra={
                    "reason": str(why), "after_seq": self.last_seq, "restarts": self.restarts})
            finally:
                await push.close()

    async def _open(self, push: CheckedPush) -> None:
        """An ephemeral push consumer from just after the last dispatched event (at the
        first start: after the stream's last one, so no event falls between two
        consumers). Broker faults are waited out: a stream without a leader gets one
        within seconds."""
        if self.last_seq is None:
            self.last_seq = await _patiently(self.last_sequence)
        await _patiently(lambda: push.open(
            f"{topology.PREFIX}.evt.>", api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_seq + 1))
        self._consuming.set()

    def _take(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:
            return  # dispatched before the restart
        self.last_seq = seq
        self._dispatch(Delivered(seq, msg.subject, msg.data, dict(msg.headers or {})))

    def _dispatch(self, event: Delivered) -> None:
        subs = self._by_user.get(topology.event_owner(event.subject))
        if not subs:
            return
        for subscription in subs:
            if subscription.wants(event.subject):
                subscription.offer(event)

    # --- replay ------------------------------------------------------------------------------

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


async def _patiently(call):
    """`call()` until the broker answers: leader elections and reconnects pass."""
    return await retry_while(call, is_broker_fault, wait_s=None, first_pause_s=0.05,
                             max_pause_s=0.5, what="JetStream not answering yet")


def continue_trace(event: Delivered):
    """A span for the push, child of the trace that produced the event."""
    context = propagate.extract(event.headers or {})
    return tracer.start_as_current_span(
        "ws.push", context=context, attributes={"messaging.message.id": str(event.seq)}
    )
