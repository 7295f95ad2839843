"""In-memory stand-ins for the NATS pieces Terra's workers touch, for unit tests.

Each fake does what the real one does for the calls Terra makes, and records what it was
asked to do, so a test can assert on it:

- `FakeKeyValue`: a JetStream KV bucket (get/put/create/update with revision checks,
  delete), raising nats-py's own errors.
- `FakeEventPublisher`: `terra.events.EventPublisher`, de-duplicating by message id the
  way the stream does with `Nats-Msg-Id`.
- `FakeMsg`: a JetStream message, recording ack/nak/in_progress/term.
- `FakePullSubscription`: a pull subscription whose `fetch` plays a script.

Plus `wait_until`, the one way these tests wait for something to happen.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.base import Event
from contracts.generation import GenerationCancelled, GenerationQueued, GenerationStarted
from contracts.jobs import JobState


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    """Yield to the event loop until `condition()` holds. The timeout only keeps a broken
    test from hanging: reaching it fails the test, it is not a claim about speed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            try:
                what = inspect.getsource(condition).strip()
            except (OSError, TypeError):
                what = repr(condition)
            raise AssertionError(f"condition never held: {what}")
        await asyncio.sleep(0.001)


# --- KV -----------------------------------------------------------------------------------


class FakeKeyValue:
    """A KV bucket in memory. Revisions are one sequence for the whole bucket, as in a
    stream; a deleted key keeps a tombstone (its revision), as in JetStream."""

    def __init__(self, bucket: str = "fake") -> None:
        self.bucket = bucket
        self._entries: dict[str, KeyValue.Entry] = {}
        self._revisions = itertools.count(1)
        self.ops: list[tuple[str, str]] = []  # (operation, key), in order
        self._failures: dict[str, deque[BaseException]] = {}

    def fail_next(self, operation: str, *errors: BaseException) -> None:
        """The next calls of `operation` ("get", "update", ...) raise these, in order."""
        self._failures.setdefault(operation, deque()).extend(errors)

    def writes(self, key: str) -> int:
        return sum(1 for op, k in self.ops if k == key and op != "get")

    def _enter(self, operation: str, key: str) -> None:
        self.ops.append((operation, key))
        pending = self._failures.get(operation)
        if pending:
            raise pending.popleft()

    def _live(self, key: str) -> KeyValue.Entry | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.operation is None else None

    def _store(self, key: str, value: bytes | None, operation: str | None = None) -> int:
        revision = next(self._revisions)
        self._entries[key] = KeyValue.Entry(bucket=self.bucket, key=key, value=value,
                                            revision=revision, delta=0, created=None,
                                            operation=operation)
        return revision

    async def get(self, key: str) -> KeyValue.Entry:
        self._enter("get", key)
        entry = self._live(key)
        if entry is None:
            raise KeyNotFoundError
        return entry

    async def put(self, key: str, value: bytes) -> int:
        self._enter("put", key)
        return self._store(key, value)

    async def create(self, key: str, value: bytes) -> int:
        self._enter("create", key)
        if self._live(key) is not None:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._store(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        self._enter("update", key)
        current = self._entries.get(key)
        if (current.revision if current else 0) != (last or 0):
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._store(key, value)

    async def delete(self, key: str) -> bool:
        self._enter("delete", key)
        self._store(key, None, operation="DEL")
        return True


# --- events -------------------------------------------------------------------------------


class FakeEventPublisher:
    """Publishes into a list. `published` holds what the stream stored (a message id seen
    before is a duplicate, as with `Nats-Msg-Id`); `attempts` every call that got through.
    `journal`, when given, is a list shared with other fakes to check the order of steps."""

    def __init__(self, journal: list | None = None) -> None:
        self.published: list[Event] = []
        self.attempts: list[Event] = []
        self.journal = journal if journal is not None else []
        self._failures: deque[BaseException] = deque()

    def fail_next(self, count: int, error: BaseException) -> None:
        """The next `count` publishes raise `error` (and store nothing)."""
        self._failures.extend([error] * count)

    async def publish(self, event: Event) -> PubAck:
        if self._failures:
            raise self._failures.popleft()
        self.attempts.append(event)
        duplicate = any(e.message_id == event.message_id for e in self.published)
        if not duplicate:
            self.published.append(event)
            self.journal.append(("publish", event.type))
        return PubAck(stream="EVENTS", seq=len(self.published), duplicate=duplicate or None)

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.published if e.type == type_]

    def types(self) -> list[str]:
        """Types of the events the stream stored."""
        return [e.type for e in self.published]

    def sent(self) -> list[str]:
        """Types of every publish that got through, duplicates included."""
        return [e.type for e in self.attempts]


class FakeJobEvents:
    """A domain's own job events (`terra.lifecycle.JobEvents`), generation-shaped."""

    def queued(self, job: JobState) -> Event | None:
        return GenerationQueued(user_id=job.user_id, job_id=job.job_id, position=0)

    def started(self, job: JobState) -> Event | None:
        return GenerationStarted(user_id=job.user_id, job_id=job.job_id)

    def cancelled(self, job: JobState) -> Event:
        return GenerationCancelled(user_id=job.user_id, job_id=job.job_id)


# --- messages and pull subscriptions ----------------------------------------------------------


class FakeMsg:
    """A JetStream message. `calls` records ("ack",), ("nak", delay), ("in_progress",),
    ("term",) in order."""

    _sequence = itertools.count(1)

    def __init__(self, data: bytes | str = b"{}", *, subject: str = "terra.test.command",
                 headers: dict[str, str] | None = None, num_delivered: int = 1,
                 stream_seq: int | None = None) -> None:
        self.data = data.encode() if isinstance(data, str) else data
        self.subject = subject
        self.headers = headers
        seq = stream_seq if stream_seq is not None else next(self._sequence)
        self.metadata = Msg.Metadata(
            sequence=Msg.Metadata.SequencePair(consumer=seq, stream=seq), num_pending=0,
            num_delivered=num_delivered, timestamp=datetime.now(UTC), stream="TEST",
            consumer="test")
        self.calls: list[tuple] = []

    async def ack(self) -> None:
        self.calls.append(("ack",))

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append(("nak", delay))

    async def in_progress(self) -> None:
        self.calls.append(("in_progress",))

    async def term(self) -> None:
        self.calls.append(("term",))

    @property
    def settlements(self) -> list[tuple]:
        """What settled it (ack, nak, term), heartbeats left out."""
        return [call for call in self.calls if call[0] != "in_progress"]


@dataclass(frozen=True)
class Sleep:
    """A script step: a fetch that waits `seconds`, then times out like an idle one."""

    seconds: float


@dataclass(frozen=True)
class After:
    """A script step: a fetch that waits for `event`, then returns `messages` (a pull that
    was pending while something else happened)."""

    event: asyncio.Event
    messages: list


class ScriptOverrun(AssertionError):
    """More fetches than the test allowed: the loop under test is spinning."""


@dataclass
class FakePullSubscription:
    """`fetch` plays `script`, one step per call: a list of messages is returned (at most
    `batch` of them; the rest stay for the next fetch, as a server would deliver them), an
    exception instance is raised, a `Sleep` waits and then times out, an `After` waits for
    its event and returns its messages.

    Once the script is played, every further fetch does `then`: by
    default it waits out its timeout and raises `nats.errors.TimeoutError`, like a real
    idle fetch; an exception class is raised (a new instance each time) at once.
    More than `max_fetches` calls raise `ScriptOverrun`.
    """

    script: list[Any] = field(default_factory=list)
    then: Any = None
    max_fetches: int | None = None
    fetches: list[tuple[int, float]] = field(default_factory=list)  # (batch, timeout)
    unsubscribed: bool = False

    def __post_init__(self) -> None:
        self._steps = deque(self.script)

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list:
        self.fetches.append((batch, timeout))
        if self.max_fetches is not None and len(self.fetches) > self.max_fetches:
            raise ScriptOverrun(f"more than {self.max_fetches} fetches")
        if self._steps:
            step = self._steps.popleft()
        else:
            step = self.then if self.then is not None else Sleep(timeout or 0)
        if isinstance(step, After):
            await step.event.wait()
            step = step.messages
        if isinstance(step, list):
            if len(step) > batch:
                self._steps.appendleft(step[batch:])
            return step[:batch]
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            raise nats.errors.TimeoutError
        if isinstance(step, type) and issubclass(step, BaseException):
            raise step()
        if isinstance(step, BaseException):
            raise step
        raise TypeError(f"not a script step: {step!r}")

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


class FakeBinder:
    """Stands in for `terra.worker.bind`: hands out `subscriptions` in order (the last one
    again once they run out) and counts the binds."""

    def __init__(self, *subscriptions: FakePullSubscription) -> None:
        self.subscriptions = list(subscriptions)
        self.binds = 0

    async def __call__(self, js, spec) -> FakePullSubscription:
        self.binds += 1
        return self.subscriptions[min(self.binds, len(self.subscriptions)) - 1]
