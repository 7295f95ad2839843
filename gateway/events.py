"""Events from the JetStream events stream to WebSocket subscribers.

Each gateway process runs one fan-out loop (supervised, see `terra.runtime.supervise`) that
follows every event the stream stores (`terra.nats.follow`: the stream's republished copy,
with what was missed read by sequence; the gateway may create no consumer), and puts
each on the queues of the sockets its owner has open here; dispatch never waits on a
socket. Every event is dispatched once and in order, whatever copies were lost (a node
loss, a reconnect): a socket sees every event once. A socket that falls `queue_size`
events behind is closed, and its client reconnects with `since` to get the rest from the
stream. Replay reads the user's own subjects by sequence (`STREAM.MSG.GET`
next-by-subject), so a socket never sees another user's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace

from contracts import topology
from terra.backoff import retry_while
from terra.nats.faults import BROKER_ERRORS, is_broker_fault
from terra.nats.follow import Stored, StreamFollower
from terra.runtime.supervise import Supervisor
from terra.runtime.worker import Backoff

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
    def __init__(self, nc: NatsClient, js: JetStreamContext, queue_size: int = 256, *,
                 quiet_s: float = 1.0, supervisor: Supervisor | None = None) -> None:
        self._nc = nc
        self._js = js
        self._queue_size = queue_size
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)
        self.quiet_s = quiet_s  # how long without a copy before asking for what came since
        self._supervisor = supervisor or Supervisor()
        self._owns_supervisor = supervisor is None
        self.last_seq: int | None = None  # the last event dispatched (or seen at start)
        self.restarts = 0
        self._consuming = asyncio.Event()  # set once the fan-out follows the stream

    async def start(self, wait_s: float = 10.0) -> None:
        """Start the fan-out, and wait (a while) until it follows the stream: events
        published once this returns reach the sockets."""
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
        """Forever: every event after the last one dispatched, in order. A broker fault
        while reading what was missed is waited out, and the follower resumes where it
        stopped (its subscription outlives the fault)."""
        follower = StreamFollower.of(self._nc, self._js, topology.EVENTS,
                                     quiet_s=self.quiet_s)
        try:
            await follower.subscribe()
            if self.last_seq is None:  # from the stream's end: no event falls in between
                self.last_seq = await _patiently(self.last_sequence)
            follower.start_after(self.last_seq)
            self._consuming.set()
            # Short pauses: a stream without a leader gets one within seconds, and the
            # sockets wait on this loop.
            backoff, never = Backoff(base_s=0.1, max_s=0.5), asyncio.Event()
            while True:
                try:
                    async for stored in follower.messages():
                        backoff.reset()
                        if stored is not None:
                            self._take(stored)
                except BROKER_ERRORS as why:
                    self.restarts += 1
                    await backoff.pause(never, "event fan-out waits for the stream", why,
                                        topology.EVENTS.name)
        finally:
            await follower.close()

    def _take(self, stored: Stored) -> None:
        self.last_seq = stored.seq
        self._dispatch(Delivered(stored.seq, stored.subject, stored.data, stored.headers))

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
