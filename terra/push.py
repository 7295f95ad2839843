"""An ephemeral push consumer read in order, every delivery checked: for a process that
must see every message of a stream once, live (the gateway's event fan-out, the
revocation watch).

The consumer acks nothing and lives in memory on one node, so it is cheap, but it dies
with its node and can skip messages when its stream changes leader. Each delivery and
each idle heartbeat says how many messages the consumer has sent; a gap, or silence for
three heartbeats, raises `Restart`, and the caller starts a new consumer from what it
has seen. Flow control requests are answered here, or delivery would stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

_deleting: set[asyncio.Task] = set()  # held until done: a bare task may be collected


class Restart(Exception):
    """The consumer lost messages or went quiet: start a new one."""


class CheckedPush:
    """One consumer's life: `open` it, read `messages`, `close` it (in a `finally`)."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, stream: str, *,
                 heartbeat_s: float) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        self.heartbeat_s = heartbeat_s
        self._sub = None
        self._name: str | None = None

    async def open(self, filter_subject: str, deliver_policy: api.DeliverPolicy,
                   **start) -> api.ConsumerInfo:
        """Create the consumer (`start`: e.g. `opt_start_seq`). Safe to call again after
        a broker fault: the inbox is kept, only the consumer is asked for again."""
        if self._sub is None:
            inbox = self._nc.new_inbox()
            self._sub = await self._nc.subscribe(inbox, pending_msgs_limit=-1,
                                                 pending_bytes_limit=-1)
        config = api.ConsumerConfig(
            deliver_subject=self._sub.subject, filter_subject=filter_subject,
            deliver_policy=deliver_policy, ack_policy=api.AckPolicy.NONE, max_deliver=1,
            flow_control=True, idle_heartbeat=self.heartbeat_s, inactive_threshold=30.0,
            num_replicas=1, mem_storage=True, **start)
        info = await self._js.add_consumer(self.stream, config)
        self._name = info.name
        return info

    async def messages(self) -> AsyncIterator[Msg | None]:
        """Each message in order; None for a heartbeat (the consumer is alive and has
        nothing new). Raises `Restart`."""
        expected = 1  # the consumer sequence of the next delivery
        while True:
            try:
                msg: Msg = await self._sub.next_msg(timeout=3 * self.heartbeat_s)
            except TimeoutError as exc:
                raise Restart("no delivery nor heartbeat") from exc
            headers = msg.headers or {}
            if headers.get(api.Header.STATUS) == api.StatusCode.CONTROL_MESSAGE:
                if msg.reply:  # a flow control request: answer it or delivery stops
                    await self._nc.publish(msg.reply)
                last = headers.get(api.Header.LAST_CONSUMER)
                if last is not None and int(last) != expected - 1:
                    raise Restart(f"heartbeat says {last} delivered, we have {expected - 1}")
                yield None
                continue
            delivered = msg.metadata.sequence.consumer
            if delivered != expected:
                raise Restart(f"delivery {delivered}, expected {expected}")
            expected += 1
            yield msg

    async def close(self) -> None:
        """Unsubscribe now; delete the consumer in the background (best effort: it also
        goes by itself once inactive)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._name is not None:
            task = asyncio.create_task(self._forget(self._name))
            _deleting.add(task)
            task.add_done_callback(_deleting.discard)
            self._name = None

    async def _forget(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._js.delete_consumer(self.stream, name)
