"""Following a stream live without a consumer: every message it stores, once and in order.

A stream with `republish_to` (`contracts.topology`) has its leader republish each message
it stores, once, with the stream's name and the message's sequence in its headers. A
process that must see every message live (the gateway's event fan-out, its revocation
list) subscribes to that copy, an import of its account. Nothing on the server holds its
position, so it needs no right to create a consumer (a right that would let it rewrite
every consumer of the stream, `contracts.permissions`); it keeps the last sequence it
handed over itself.

A copy can be lost (a reconnect, a slow subscriber, a leader change): a sequence that
skips ahead makes the follower read the missing messages by sequence (STREAM.MSG.GET,
answered by the stream's leader), and a quiet spell makes it ask whether anything came
after the last one. So no message is missed and none is handed over twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.topology import KvSpec, StreamSpec

log = logging.getLogger(__name__)

# Copies buffered before the subscription drops some (then they are read by sequence).
_PENDING_MSGS = 65_536
_PENDING_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Stored:
    """One message as the stream stored it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class StreamFollower:
    """`subscribe`, `start_after(seq)`, then read `messages()`; `close` in a `finally`."""

    @classmethod
    def of(cls, nc: NatsClient, js: JetStreamContext, spec: StreamSpec | KvSpec, *,
           quiet_s: float = 1.0) -> StreamFollower:
        """The follower of a stream or bucket of the contracts that republishes."""
        assert spec.republish_to, f"{spec} republishes nothing"
        if isinstance(spec, KvSpec):
            return cls(nc, js, spec.stream, live_subject=spec.republish_to,
                       subjects=spec.subject_filter, quiet_s=quiet_s)
        return cls(nc, js, spec.name, live_subject=spec.republish_to,
                   subjects=spec.subjects[0], quiet_s=quiet_s)

    def __init__(self, nc: NatsClient, js: JetStreamContext, stream: str, *,
                 live_subject: str, subjects: str, quiet_s: float = 1.0) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        self.live_subject = live_subject  # where the copies arrive (`>` for the rest)
        self.subjects = subjects  # the stream's own subjects, for reads by sequence
        self.quiet_s = quiet_s
        self.last_seq: int | None = None  # the last message handed over
        self.reads = 0  # messages read by sequence (copies lost, or a quiet tail)
        self._sub = None

    async def subscribe(self) -> None:
        """Start receiving copies (before the starting point is read, so none falls
        between the two)."""
        if self._sub is None:
            self._sub = await self._nc.subscribe(self.live_subject,
                                                 pending_msgs_limit=_PENDING_MSGS,
                                                 pending_bytes_limit=_PENDING_BYTES)

    def start_after(self, seq: int) -> None:
        self.last_seq = seq

    async def messages(self) -> AsyncIterator[Stored | None]:
        """Each message stored after the starting point, in order; None after a quiet
        spell with nothing new. Broker faults of the reads by sequence propagate: call
        again after them, it resumes after the last message handed over."""
        assert self._sub is not None and self.last_seq is not None, "subscribe, start_after"
        while True:
            try:
                msg = await self._sub.next_msg(timeout=self.quiet_s)
            except TimeoutError:
                async for stored in self._read(self.last_seq + 1, up_to=None):
                    yield stored
                yield None
                continue
            copy = self._copy(msg)
            if copy is None or copy.seq <= self.last_seq:
                continue
            if copy.seq > self.last_seq + 1:  # copies were lost: read them
                async for stored in self._read(self.last_seq + 1, up_to=copy.seq - 1):
                    yield stored
            self.last_seq = copy.seq
            yield copy

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _copy(self, msg: Msg) -> Stored | None:
        """The stored message a republished copy carries; None for anything else."""
        headers = dict(msg.headers or {})
        try:
            seq = int(headers.get("Nats-Sequence", ""))
        except ValueError:
            seq = 0
        subject = headers.get("Nats-Subject")
        if headers.get("Nats-Stream") != self.stream or seq < 1 or not subject:
            log.warning("not a copy of this stream; ignored",
                        extra={"stream": self.stream, "subject": msg.subject})
            return None
        return Stored(seq, subject, msg.data, headers)

    async def _read(self, seq: int, up_to: int | None) -> AsyncIterator[Stored]:
        """The stored messages from `seq` (to `up_to`), by sequence."""
        while up_to is None or seq <= up_to:
            try:
                raw = await self._js.get_msg(self.stream, seq=seq, subject=self.subjects,
                                             next=True)
            except NotFoundError:
                return
            if up_to is not None and raw.seq > up_to:
                return
            self.reads += 1
            self.last_seq = raw.seq
            yield Stored(raw.seq, raw.subject, raw.data or b"", dict(raw.headers or {}))
            seq = raw.seq + 1
