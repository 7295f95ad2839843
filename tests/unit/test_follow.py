"""terra.nats.follow: every stored message handed over once and in order, from the stream's
republished copies, with whatever copy was lost read by sequence."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats.errors
import pytest
from nats.js.errors import NotFoundError

from terra.nats.follow import StreamFollower

STREAM = "EVENTS"


@dataclass
class Raw:
    seq: int
    subject: str
    data: bytes
    headers: dict | None = None


@dataclass
class Copy:
    subject: str
    data: bytes
    headers: dict


class FakeStream:
    """A stream's messages, its republished copies (that a test may lose), and the reads
    by sequence a follower makes."""

    def __init__(self) -> None:
        self.stored: list[Raw] = []
        self.copies: asyncio.Queue[Copy] = asyncio.Queue()
        self.reads: list[int] = []
        self.failures: list[BaseException] = []

    def store(self, subject: str, data: bytes, *, copy: bool = True) -> int:
        seq = len(self.stored) + 1
        self.stored.append(Raw(seq, subject, data, {"Trace": str(seq)}))
        if copy:
            self.copies.put_nowait(Copy(f"live.{subject}", data, {
                "Nats-Stream": STREAM, "Nats-Subject": subject, "Nats-Sequence": str(seq),
                "Trace": str(seq)}))
        return seq

    # nats-py's client and JetStream context, as far as the follower uses them
    async def subscribe(self, subject: str, **_) -> FakeStream:
        return self

    async def next_msg(self, timeout: float) -> Copy:
        return await asyncio.wait_for(self.copies.get(), timeout)

    async def unsubscribe(self) -> None:
        pass

    async def get_msg(self, stream: str, *, seq: int, subject: str, next: bool) -> Raw:
        assert stream == STREAM and next and subject == "evt.>"
        if self.failures:
            raise self.failures.pop(0)
        self.reads.append(seq)
        for raw in self.stored:
            if raw.seq >= seq:
                return raw
        raise NotFoundError


def follower_of(stream: FakeStream) -> StreamFollower:
    return StreamFollower(stream, stream, STREAM, live_subject="live.>", subjects="evt.>",
                          quiet_s=0.05)


async def take(follower: StreamFollower, count: int) -> list:
    """The next `count` items (None for a quiet spell)."""
    taken = []
    async for item in follower.messages():
        taken.append(item)
        if len(taken) == count:
            return taken
    return taken


async def started(stream: FakeStream, after: int = 0) -> StreamFollower:
    follower = follower_of(stream)
    await follower.subscribe()
    follower.start_after(after)
    return follower


async def test_copies_are_handed_over_once_in_order_with_no_read():
    stream = FakeStream()
    for n in range(3):
        stream.store(f"evt.a.{n}", b"%d" % n)
    follower = await started(stream)
    taken = await take(follower, 3)
    assert [(m.seq, m.subject, m.data) for m in taken] == [
        (1, "evt.a.0", b"0"), (2, "evt.a.1", b"1"), (3, "evt.a.2", b"2")]
    assert taken[0].headers["Trace"] == "1"  # the event's own headers come along
    assert stream.reads == [] and follower.reads == 0


async def test_a_lost_copy_is_read_by_sequence_before_the_next_one():
    stream = FakeStream()
    stream.store("evt.a.1", b"1")
    stream.store("evt.a.2", b"2", copy=False)  # lost: a reconnect, a slow subscriber
    stream.store("evt.a.3", b"3", copy=False)
    stream.store("evt.a.4", b"4")
    follower = await started(stream)
    assert [m.seq for m in await take(follower, 4)] == [1, 2, 3, 4]
    assert follower.reads == 2 and follower.last_seq == 4


async def test_a_quiet_spell_finds_what_came_after_the_last_copy():
    stream = FakeStream()
    stream.store("evt.a.1", b"1")
    stream.store("evt.a.2", b"2", copy=False)  # the last copies lost, nothing after them
    follower = await started(stream)
    first, second, quiet = await take(follower, 3)
    assert (first.seq, second.seq, quiet) == (1, 2, None)


async def test_repeats_and_what_is_not_a_copy_of_this_stream_are_skipped():
    stream = FakeStream()
    seq = stream.store("evt.a.1", b"1")
    stream.copies.put_nowait(Copy("live.evt.a.1", b"1", {  # a second copy of the same
        "Nats-Stream": STREAM, "Nats-Subject": "evt.a.1", "Nats-Sequence": str(seq)}))
    stream.copies.put_nowait(Copy("live.evt.x", b"forged", {"Nats-Sequence": "99"}))
    stream.copies.put_nowait(Copy("live.evt.y", b"forged", {
        "Nats-Stream": "OTHER", "Nats-Subject": "evt.y", "Nats-Sequence": "2"}))
    stream.store("evt.a.2", b"2")
    follower = await started(stream)
    assert [m.seq for m in await take(follower, 2)] == [1, 2]


async def test_messages_from_before_the_start_are_not_handed_over():
    stream = FakeStream()
    for n in range(3):
        stream.store(f"evt.a.{n}", b"x")
    follower = await started(stream, after=2)
    assert [m.seq for m in await take(follower, 1)] == [3]


async def test_a_broker_fault_propagates_and_the_follower_resumes_where_it_stopped():
    stream = FakeStream()
    stream.store("evt.a.1", b"1")
    stream.store("evt.a.2", b"2", copy=False)
    stream.store("evt.a.3", b"3")
    stream.failures.append(nats.errors.NoRespondersError())
    follower = await started(stream)
    handed = [m.seq for m in await take(follower, 1)]
    with pytest.raises(nats.errors.NoRespondersError):
        await take(follower, 1)  # the copy of 3 arrives, the read of 2 fails
    # 3's copy went with the failed pass: the next quiet spell reads 2 and 3 by sequence.
    handed += [m and m.seq for m in await take(follower, 3)]
    assert handed == [1, 2, 3, None]
