"""In-memory stand-ins for the NATS pieces Terra's workers touch, for unit tests.

Each fake does what the real one does for the calls Terra makes, and records what it was
asked to do, so a test can assert on it:

- `FakeKeyValue`: a JetStream KV bucket (get/put/create/update/delete with revision
  checks, and the stream's STREAM.INFO subject listing), raising nats-py's own errors.
  No watch: Terra's identities may not create consumers, so its code never watches.
- `FakeEventPublisher`: `terra.nats.events.EventPublisher`, de-duplicating by message id the
  way the stream does with `Nats-Msg-Id`.
- `FakeMsg`: a JetStream message, recording ack/nak/in_progress/term.
- `FakePullSubscription`: a pull subscription whose `fetch` plays a script.
- `FakeObjectStorage`: `terra.records.objects.ObjectStorage` in memory, raising `ObjectMissing`
  for a missing object as the real one does.
- `FakeFluxGenerator`: `generator_service.pipelines.FluxGenerator` without a model: tiny
  images, `Cancelled` when `should_stop()` says so, and a gate to hold a loop mid-way.

Plus `wait_until`, the one way these tests wait for something to happen.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.base import Event
from terra.errors import ObjectMissing
from terra.runtime.worker import subject_matches


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

    def __init__(self, bucket: str = "fake", journal: list | None = None) -> None:
        self.bucket = bucket
        self._entries: dict[str, KeyValue.Entry] = {}
        self._revisions = itertools.count(1)
        self.ops: list[tuple[str, str]] = []  # (operation, key), in order
        # Writes as ("kv.<operation>", "<bucket>/<key>"), when shared with other fakes.
        self.journal = journal
        self._failures: dict[str, deque[BaseException]] = {}
        self.subjects_page_size = 100_000  # nats-server's page of STREAM.INFO subjects
        self.after_stream_info: Callable[[], None] | None = None  # e.g. keys expiring

    def fail_next(self, operation: str, *errors: BaseException) -> None:
        """The next calls of `operation` ("get", "update", ...) raise these, in order."""
        self._failures.setdefault(operation, deque()).extend(errors)

    def writes(self, key: str) -> int:
        return sum(1 for op, k in self.ops if k == key and op not in _KV_READS)

    def key_ending(self, suffix: str) -> str | None:
        """The live key `<anything>.<suffix>` (a test that knows a job id, not its owner)."""
        found = [key for key in self.live_keys() if key.endswith(f".{suffix}")]
        return found[0] if found else None

    def live_keys(self) -> list[str]:
        """The live keys, in the order they were last written (a test's view, no op)."""
        return [key for key, _ in sorted(self._entries.items(), key=lambda i: i[1].revision)
                if self._live(key) is not None]

    def _enter(self, operation: str, key: str) -> None:
        self.ops.append((operation, key))
        if self.journal is not None and operation not in _KV_READS:
            self.journal.append((f"kv.{operation}", f"{self.bucket}/{key}"))
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

    async def delete(self, key: str, last: int | None = None) -> bool:
        self._enter("delete", key)
        if last is not None:
            current = self._entries.get(key)
            if (current.revision if current else 0) != last:
                raise KeyWrongLastSequenceError(description="wrong last sequence")
        self._store(key, None, operation="DEL")
        return True

    async def purge(self, key: str) -> bool:
        """A delete that also drops the key's history (what nats-py's purge does)."""
        self._enter("purge", key)
        self._store(key, None, operation="PURGE")
        return True

    # What terra.nats.listings reaches through nats-py's private handles: the bucket's stream,
    # answering STREAM.INFO with the subjects it holds a message for, paged.
    @property
    def _js(self) -> FakeKeyValue:
        return self

    _prefix, _timeout = "$JS.API", 5.0

    @property
    def _stream(self) -> str:
        return f"KV_{self.bucket}"

    @property
    def _pre(self) -> str:
        return f"$KV.{self.bucket}."

    async def _api_request(self, subject: str, payload: bytes, timeout: float) -> dict:
        assert subject == f"{self._prefix}.STREAM.INFO.{self._stream}", subject
        request = json.loads(payload)
        self._enter("stream_info", request["subjects_filter"])
        keys = request["subjects_filter"].removeprefix(self._pre)
        # As nats-server pages them: sorted by name, the list made afresh at each call.
        subjects = sorted(f"{self._pre}{key}" for key in self._entries
                          if _subject_matches(keys, key))
        offset = request.get("offset", 0)
        page = subjects[offset:offset + self.subjects_page_size]
        answer = {"state": {"subjects": dict.fromkeys(page, 1)}, "total": len(subjects),
                  "offset": offset, "limit": self.subjects_page_size}
        if self.after_stream_info is not None:
            self.after_stream_info()
        return answer

    def expire(self, key: str) -> None:
        """The key's last message goes, as a bucket's TTL removes it: no marker left."""
        self._entries.pop(key, None)


_KV_READS = ("get", "stream_info")


def _subject_matches(pattern: str, subject: str) -> bool:
    return subject_matches(subject, pattern)




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
    """Stands in for `terra.runtime.worker.bind`: hands out `subscriptions` in order (the last one
    again once they run out) and counts the binds."""

    def __init__(self, *subscriptions: FakePullSubscription) -> None:
        self.subscriptions = list(subscriptions)
        self.binds = 0

    async def __call__(self, js, spec) -> FakePullSubscription:
        self.binds += 1
        return self.subscriptions[min(self.binds, len(self.subscriptions)) - 1]


# --- object storage ---------------------------------------------------------------------------


class FakeObjectStorage:
    """`terra.records.objects.ObjectStorage` in memory. `objects` maps key -> bytes; a missing
    object raises `ObjectMissing("NoSuchKey: ...")` as the real one does; `ops` records
    (operation, key or prefix) in order, and `journal` (shared with other fakes) the
    writes, to check the order of steps."""

    def __init__(self, journal: list | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.ops: list[tuple[str, str]] = []
        self.journal = journal if journal is not None else []
        self._failures: dict[str, deque[BaseException]] = {}

    def fail_next(self, operation: str, *errors: BaseException) -> None:
        """The next calls of `operation` ("get_bytes", "delete_prefix", ...) raise these."""
        self._failures.setdefault(operation, deque()).extend(errors)

    def _enter(self, operation: str, key: str) -> None:
        self.ops.append((operation, key))
        pending = self._failures.get(operation)
        if pending:
            raise pending.popleft()
        if operation in ("put_bytes", "delete", "delete_prefix"):
            self.journal.append((f"s3.{operation}", key))

    def under(self, prefix: str) -> list[str]:
        """The keys under `prefix` (a test's view: no operation recorded)."""
        return sorted(key for key in self.objects if key.startswith(prefix))

    async def ping(self) -> None:
        self._enter("ping", "")

    async def put_bytes(self, key: str, data: bytes,
                        content_type: str = "application/octet-stream",
                        metadata: dict[str, str] | None = None) -> None:
        self._enter("put_bytes", key)
        self.objects[key] = bytes(data)
        self.content_types[key] = content_type

    async def get_bytes(self, key: str) -> bytes:
        self._enter("get_bytes", key)
        if key not in self.objects:
            raise ObjectMissing("NoSuchKey: The specified key does not exist.")
        return self.objects[key]

    async def exists(self, key: str) -> bool:
        self._enter("exists", key)
        return key in self.objects

    async def list_keys(self, prefix: str) -> list[str]:
        self._enter("list_keys", prefix)
        return self.under(prefix)

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix.endswith("/"):
            raise ValueError("a prefix to delete must end in '/' (never a partial user id)")
        self._enter("delete_prefix", prefix)
        keys = self.under(prefix)
        for key in keys:
            del self.objects[key]
        return len(keys)

    async def delete(self, key: str) -> None:
        self._enter("delete", key)
        self.objects.pop(key, None)  # a missing one is not an error (S3 semantics)

    async def presigned_get(self, key: str, expires: Any = None) -> str:
        self._enter("presigned_get", key)
        return f"http://s3.invalid/terra/{key}?signed"


# --- generation -------------------------------------------------------------------------------


class FakeFluxGenerator:
    """What generator_service uses of `FluxGenerator`, with no model: `generate_batch`
    returns, per request, `num_images` tiny solid images seeded `seed + i` (or raises the
    next of `errors`); it reports `steps` steps and asks `should_stop()` before each, and
    after the first it waits for `gate` (set by default), still asking `should_stop()`:
    a stop gives `Cancelled` (held past `held_at_most_s`, it raises AssertionError). `calls` holds each batch's requests, `forgotten` the
    adapters dropped. Runs on the generation thread, like the real one (no torch import
    until it is called)."""

    def __init__(self, *, steps: int = 2, size: int = 8, held_at_most_s: float = 10.0) -> None:
        self.steps = steps
        self.size = size
        self.held_at_most_s = held_at_most_s
        self.calls: list[list] = []
        self.loaded: set[str] = set()  # adapters loaded (once each)
        self.forgotten: list[str] = []
        self.errors: deque[BaseException] = deque()
        self.gate = threading.Event()
        self.gate.set()
        self.in_loop = threading.Event()  # set once a loop has done its first step

    def generate_batch(self, requests: Sequence, *, on_step=None, should_stop=None):
        from PIL import Image

        from generator_service.pipelines import Cancelled, GeneratedImage

        self.calls.append(list(requests))
        if self.errors:
            raise self.errors.popleft()
        lora = requests[0].lora
        if lora is not None and lora.adapter_id not in self.loaded:
            lora.load()  # as the adapter cache does on a miss (it may raise)
            self.loaded.add(lora.adapter_id)
        stop = should_stop or (lambda: False)
        for step in range(1, self.steps + 1):
            if stop():
                return Cancelled(step - 1, self.steps)
            if on_step is not None:
                on_step(step, self.steps)
            self.in_loop.set()
            held_until = time.monotonic() + self.held_at_most_s
            while not self.gate.wait(0.002):
                if stop():
                    return Cancelled(step, self.steps)
                if time.monotonic() > held_until:  # a lost cancel fails, not hangs, a test
                    raise AssertionError("held at the gate and never stopped")
        results = []
        for number, request in enumerate(requests):
            seed = request.seed if request.seed is not None else number
            results.append([GeneratedImage(
                Image.new("RGB", (self.size, self.size), (seed % 256, i * 60 % 256, 0)),
                seed + i, i, {"prompt": request.prompt, "seed": str(seed + i)})
                for i in range(request.num_images)])
        return results

    def forget_adapter(self, adapter_id: str) -> bool:
        self.forgotten.append(adapter_id)
        return True
