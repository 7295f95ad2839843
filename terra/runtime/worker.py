"""What every JetStream worker does with its commands: pull them, settle them, and handle
dead letters.

`fetch` is the one call into nats-py's pull API. It turns every exception nats-py
documents for `PullSubscription.fetch` into one of three outcomes: nothing to do yet (an
idle timeout, of either of the two timeout types it raises), a broker fault to wait out
(`BrokerUnavailable`: a leader election, a reconnect, a full outbound buffer), or a
consumer to bind again (`ConsumerGone`). Anything else is a bug and reaches the
supervisor, which logs it and restarts the loop.

`PullConsumer.run` is a worker's loop over one durable consumer; `settle` acks work that
finished, naks a failed attempt with a growing delay (the consumer's `max_deliver` bounds
the attempts), and acks a command that can never succeed after its handler has reported
the failure. When attempts run out, the server publishes a max-deliveries advisory;
`watch_dead_letters` turns it into the service's failure handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import propagate, trace
from pydantic import BaseModel, ConfigDict, Field

from contracts.topology import MAX_DELIVERIES_ADVISORY, ConsumerSpec
from terra.backoff import Draw, retry_delay_s
from terra.errors import TerraError
from terra.nats.faults import TRANSIENT_ERRORS

log = logging.getLogger(__name__)
tracer = trace.get_tracer("terra.runtime.worker")


class PermanentFailure(TerraError):
    """The command can never succeed (bad input); retrying is pointless."""


class AgainLater(TerraError):
    """Done for now, and to be done once more after `delay_s` (e.g. a second pass of an
    erasure that catches what work in flight wrote after the first)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"again in {delay_s} s")
        self.delay_s = delay_s


class BrokerUnavailable(TerraError):
    """NATS cannot serve the call right now (no leader, reconnecting); try again soon."""


class ConsumerGone(TerraError):
    """The durable consumer or our subscription to it no longer exists: bind again."""


async def fetch(subscription: JetStreamContext.PullSubscription, batch: int,
                timeout_s: float) -> list[Msg]:
    """Up to `batch` messages, or [] when none came within `timeout_s`."""
    try:
        return await subscription.fetch(batch, timeout=timeout_s)
    except TimeoutError:
        # nats.errors.TimeoutError, FetchTimeoutError and the built-in asyncio.TimeoutError
        # (raised from `_fetch_n` when the deadline passes between its two requests).
        return []
    except (nats.js.errors.NotFoundError, nats.errors.BadSubscriptionError) as exc:
        raise ConsumerGone(str(exc)) from exc
    except ValueError as exc:
        if "invalid subscription" not in str(exc):
            raise  # a bad argument is a bug, not a vanished consumer
        raise ConsumerGone(str(exc)) from exc
    except TRANSIENT_ERRORS as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except nats.js.errors.APIError as exc:
        # A pull answered with a status nats-py does not treat as temporary (409 leadership
        # change, consumer deleted mid-pull, 400 during a migration): the consumer must be
        # looked up again.
        raise ConsumerGone(f"{exc.code}: {exc.description}") from exc


async def bind(js: JetStreamContext, spec: ConsumerSpec) -> JetStreamContext.PullSubscription:
    """Our pull subscription to the provisioned durable consumer `spec`."""
    try:
        return await js.pull_subscribe_bind(spec.durable, stream=spec.stream)
    except TimeoutError as exc:
        raise BrokerUnavailable(f"binding {spec.durable} timed out") from exc
    except nats.js.errors.NotFoundError as exc:
        raise ConsumerGone(f"consumer {spec.stream}/{spec.durable} not found") from exc
    except TRANSIENT_ERRORS as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc


Handle = Callable[[Msg], Awaitable[None]]


class Backoff:
    """The pause between tries while a broker fault lasts: `retry_delay_s` over the faults
    in a row, from `base_s` up to `max_s`, cut short by a stop, reset by the first success."""

    def __init__(self, base_s: float = 0.2, max_s: float = 2.0,
                 draw: Draw = random.random) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.draw = draw
        self.faults = 0

    def reset(self) -> None:
        self.faults = 0

    async def pause(self, stopping: asyncio.Event, why: str, exc: Exception, what: str) -> None:
        self.faults += 1
        delay = retry_delay_s(self.faults, self.base_s, self.max_s, draw=self.draw)
        log.warning(why, extra={"consumer": what, "error": str(exc), "retry_in_s": delay})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)


class Puller:
    """Our subscription to one durable consumer, and the one way to pull from it: it binds
    when it must, waits broker faults out, binds again after the consumer went away, and
    hands back what arrives once `stopping` is set. `pull` returns messages, or [] ."""

    def __init__(self, js: JetStreamContext, spec: ConsumerSpec, stopping: asyncio.Event,
                 backoff: Backoff | None = None) -> None:
        self.js = js
        self.spec = spec
        self.stopping = stopping
        self.backoff = backoff or Backoff()
        self.last_pull = float("-inf")
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def pull(self, batch: int, timeout_s: float) -> list[Msg]:
        name = self.spec.durable
        try:
            if self._subscription is None:
                self._subscription = await bind(self.js, self.spec)
            messages = await fetch(self._subscription, batch, timeout_s)
        except BrokerUnavailable as exc:
            await self.backoff.pause(self.stopping, "broker unavailable", exc, name)
            return []
        except ConsumerGone as exc:
            await self.close()
            await self.backoff.pause(self.stopping, "consumer gone; binding again", exc, name)
            return []
        self.last_pull = time.monotonic()
        self.backoff.reset()
        if self.stopping.is_set():  # stopped while the pull was out: hand them back
            for msg in messages:
                await settle_quietly(msg.nak)
            return []
        return messages

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


class PullConsumer:
    """A worker's loop over one durable consumer: up to `concurrency` messages in hand,
    each passed to `handle` (which settles it), until `stop()`.

    Broker faults are waited out here with a short, growing pause; a consumer that went
    away is bound again. `pulling` says whether the loop is alive and recently pulled or
    is busy with work, for liveness reports.
    """

    def __init__(self, js: JetStreamContext, spec: ConsumerSpec, handle: Handle, *,
                 concurrency: int = 1, fetch_timeout_s: float = 1.0,
                 stale_after_s: float = 10.0, backoff: Backoff | None = None) -> None:
        self.js = js
        self.spec = spec
        self.handle = handle
        self.concurrency = concurrency
        self.fetch_timeout_s = fetch_timeout_s
        self.stale_after_s = stale_after_s
        self.in_hand: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._puller = Puller(js, spec, self._stopping, backoff)
        self._free = concurrency  # messages we may still take in hand
        self._room = asyncio.Event()  # set whenever `_free` goes up
        self._no_pull_out = asyncio.Event()  # clear while a pull request is out
        self._no_pull_out.set()

    @property
    def name(self) -> str:
        return self.spec.durable

    @property
    def last_pull(self) -> float:
        return self._puller.last_pull

    @property
    def _backoff(self) -> Backoff:
        return self._puller.backoff

    @property
    def pulling(self) -> bool:
        fresh = time.monotonic() - self.last_pull < self.stale_after_s
        return not self._stopping.is_set() and (fresh or bool(self.in_hand))

    async def run(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(0)  # a fetch that never suspends must not starve the loop
            free = await self._wait_for_room()
            self._no_pull_out.clear()
            try:
                pulled = await self._puller.pull(free, self.fetch_timeout_s)
            finally:
                self._no_pull_out.set()
            for msg in pulled:
                self._free -= 1
                task = asyncio.create_task(self._handle(msg))
                self.in_hand.add(task)
                task.add_done_callback(self.in_hand.discard)

    async def stop(self, grace_s: float) -> None:
        """Stop pulling; give what is in hand `grace_s` to finish, then hand it back."""
        self._stopping.set()
        if self.in_hand:
            await asyncio.wait(set(self.in_hand), timeout=grace_s)
        for task in set(self.in_hand):
            task.cancel()
        if self.in_hand:
            await asyncio.wait(set(self.in_hand), timeout=2.0)
        # A message handed back just now may be redelivered at once into the pull request
        # still out: let it come back (`Puller.pull` hands it back again, and no new pull
        # goes out), or it would wait in a dead inbox for the consumer's ack_wait.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_pull_out.wait(), self.fetch_timeout_s + 1.0)
        await self._puller.close()

    async def _wait_for_room(self) -> int:
        """How many more messages may be fetched now (waits for at least one)."""
        while self._free <= 0:
            self._room.clear()
            await self._room.wait()
        return self._free

    async def _handle(self, msg: Msg) -> None:
        try:
            with consuming(msg):
                await self.handle(msg)
        except asyncio.CancelledError:
            # Stopped mid-work: hand it back now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:  # `handle` settles; anything here is a bug worth a stack
            log.exception("message handling failed", extra={"consumer": self.name})
        finally:
            self._free += 1
            self._room.set()


def consuming(msg: Msg):
    """A span for handling `msg`, child of the trace that published it."""
    return tracer.start_as_current_span(
        f"{msg.subject} process", context=propagate.extract(dict(msg.headers or {})),
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject})


async def settle(msg: Msg, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` (decoding included) and ack, nak with a delay, or ack a lost cause.

    A settle that cannot reach the server is not an error: the message comes back after
    `ack_wait`, and the job's recorded state makes the second run a no-op.
    """
    attempt = msg.metadata.num_delivered
    try:
        await work()
    except AgainLater as again:
        await settle_quietly(msg.nak, delay=again.delay_s)
    except PermanentFailure as exc:
        log.warning("command refused", extra={"reason": str(exc), "attempt": attempt})
        await settle_quietly(msg.ack)
    except Exception:
        delay = retry_delay_s(attempt)
        log.exception("command failed; will retry", extra={"attempt": attempt, "delay_s": delay})
        await settle_quietly(msg.nak, delay=delay)
    else:
        await settle_quietly(msg.ack)


async def settle_quietly(action, **kwargs) -> None:
    """Ack or nak; one that cannot reach the server is redelivered later, and the job's
    recorded state makes the second delivery a no-op."""
    try:
        await action(**kwargs)
    except (nats.errors.Error, OSError) as exc:
        log.warning("could not settle a message; it will be redelivered",
                    extra={"error": f"{type(exc).__name__}: {exc}"})


class MaxDeliveriesAdvisory(BaseModel):
    """What the server says when a message ran out of deliveries (the fields we use)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["io.nats.jetstream.advisory.v1.max_deliver"]
    stream: str
    consumer: str
    stream_seq: int = Field(ge=1)
    deliveries: int | None = None


def read_advisory(data: bytes, consumer: ConsumerSpec) -> MaxDeliveriesAdvisory | None:
    """The advisory when it is one, about `consumer`; None for anything else (bytes that
    are no advisory, or one about another stream or consumer: never acted on)."""
    try:
        advisory = MaxDeliveriesAdvisory.model_validate_json(data)
    except ValueError:
        return None
    if (advisory.stream, advisory.consumer) != (consumer.stream, consumer.durable):
        return None
    return advisory


async def watch_dead_letters(
    nc: NatsClient,
    js: JetStreamContext,
    consumer: ConsumerSpec,
    on_dead_letter: Callable[[bytes], Awaitable[None]],
    *,
    queue: str,
    retry_for_s: float = 60.0,
):
    """Subscribe to the consumer's max-deliveries advisories (one replica per advisory).

    An advisory is acted on only when it parses, names this very stream and consumer, and
    the message it names exists on the consumer's own subjects: anything else that
    reaches the subject is logged and dropped. The advisory is a core NATS message, sent
    once: a broker fault while handling it is retried here for a while, or the job would
    stay unfinished forever.
    """
    subject = f"{MAX_DELIVERIES_ADVISORY}.{consumer.stream}.{consumer.durable}"

    async def handle_once(seq: int) -> None:
        try:
            message = await js.get_msg(consumer.stream, seq)
        except nats.js.errors.NotFoundError:
            return  # already removed by another replica
        if not subject_matches(message.subject, consumer.filter_subject):
            log.warning("advisory names a message of another consumer; ignored",
                        extra={"stream_seq": seq, "subject": message.subject})
            return
        await on_dead_letter(message.data)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_msg(consumer.stream, seq)

    async def handle(msg) -> None:
        advisory = read_advisory(msg.data, consumer)
        if advisory is None:
            log.warning("not an advisory about this consumer; ignored",
                        extra={"consumer": consumer.durable, "data": msg.data[:80]})
            return
        seq = advisory.stream_seq
        log.error(
            "dead letter: deliveries exhausted",
            extra={"stream": consumer.stream, "consumer": consumer.durable, "stream_seq": seq,
                   "deliveries": advisory.deliveries},
        )
        deadline = time.monotonic() + retry_for_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await handle_once(seq)
                return
            except Exception:
                if time.monotonic() > deadline:
                    log.exception("dead letter could not be handled; giving up",
                                  extra={"stream_seq": seq})
                    return
                log.warning("dead letter handling failed; retrying",
                            extra={"stream_seq": seq, "attempt": attempt}, exc_info=True)
                await asyncio.sleep(retry_delay_s(attempt, base_s=0.5, cap_s=5.0))

    return await nc.subscribe(subject, queue=queue, cb=handle)


def subject_matches(subject: str, pattern: str) -> bool:
    """NATS wildcard matching: `*` one token, `>` one or more at the end."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def handling(model, use_case: Callable[..., Awaitable[None]], *,
             with_message: bool = False) -> Handle:
    """A consumer's handler: the message decoded as `model`, passed to `use_case` (with
    the message itself when it needs its delivery count or heartbeat), then settled."""
    async def handle(msg: Msg) -> None:
        async def work() -> None:
            decoded = decode(model, msg.data)
            await (use_case(decoded, msg) if with_message else use_case(decoded))

        await settle(msg, work)

    return handle


def decode(model, body: bytes):
    """The message as `model`, or a `PermanentFailure` (retrying cannot fix bad bytes)."""
    try:
        return model.model_validate_json(body)
    except ValueError as exc:
        raise PermanentFailure(f"undecodable {model.__name__}: {exc}") from exc
