"""generator_service's FairWorker over a scripted pull subscription, fake handlers and the
real job lifecycle on in-memory fakes; and the pure scheduling `Window`.

The worker loop imports no torch: it meets the handlers only through the interface the
fakes stand in for.
"""

from __future__ import annotations

import asyncio
from collections import deque

import nats.errors
import nats.js.errors

import terra.runtime.worker
from contracts.generation import GeneratedImage, GenerateImage, ImageGenerated
from contracts.jobs import CancelJob, FailureCode, JobKind, JobStatus
from generator_service.jobs import GenerationEvents, ref_of
from generator_service.scheduling import Window
from generator_service.worker import FairWorker
from terra.jobs.lifecycle import JobFailure, JobLifecycle
from terra.jobs.store import JobStore
from tests.fakes import (
    After,
    FakeBinder,
    FakeEventPublisher,
    FakeKeyValue,
    FakeMsg,
    FakePullSubscription,
    wait_until,
)

POSITION = "generation.position_changed.v1"
QUEUED = "generation.queued.v1"
FAILED = "job.failed.v1"
REQUEUED = "job.requeued.v1"


class FakeHandlers:
    """What FairWorker uses of GeneratorHandlers, and the real lifecycle over fakes that the
    worker is given too. `take` is the real one's (the lifecycle decides); `generate`
    starts the jobs, waits for `gate`, then ends them or raises the next of `outcomes`."""

    def __init__(self) -> None:
        self.kv = FakeKeyValue("jobs")
        self.jobs = JobStore({JobKind.GENERATION: self.kv})
        self.events = FakeEventPublisher()
        self.lifecycle = JobLifecycle(JobKind.GENERATION, self.jobs, self.events,
                                      GenerationEvents())
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.outcomes: deque[BaseException | None] = deque()
        self.take_errors: deque[BaseException] = deque()

    async def take(self, command: GenerateImage, delivery: int) -> bool:
        if self.take_errors:
            raise self.take_errors.popleft()
        return await self.lifecycle.receive(ref_of(command), delivery) is not None

    async def generate(self, commands: list[GenerateImage]) -> None:
        self.batches.append([c.job_id for c in commands])
        for command in commands:
            await self.lifecycle.begin(ref_of(command))
        await self.gate.wait()
        outcome = self.outcomes.popleft() if self.outcomes else None
        if outcome is not None:
            raise outcome
        for command in commands:
            await self.lifecycle.succeed(ref_of(command), ImageGenerated(
                user_id=command.user_id, job_id=command.job_id, images=[GeneratedImage(
                    image_id=f"{command.job_id}-0", key="k", width=256, height=256, seed=1)]),
                result={})

    def positions(self) -> list[tuple[str, int]]:
        return [(e.job_id, e.position) for e in self.events.attempts if e.type == POSITION]

    async def status(self, job_id: str) -> JobStatus:
        owner = self.kv.key_ending(job_id).split(".")[0]
        return (await self.jobs.get(owner, job_id)).status


def command(job_id: str, user_id: str, **fields) -> GenerateImage:
    values = {"prompt": "a red fox", "model": "schnell", "steps": 2, "seed": 7, "width": 256,
              "height": 256, "correlation_id": f"req-{job_id}"}
    return GenerateImage(job_id=job_id, user_id=user_id, **{**values, **fields})


def msg_of(cmd: GenerateImage, *, delivery: int = 1) -> FakeMsg:
    return FakeMsg(cmd.model_dump_json(), num_delivered=delivery)


class Harness:
    def __init__(self, monkeypatch, script: list, *, then=None, max_fetches=None,
                 queue_window: int = 32, batch_max_images: int = 1,
                 heartbeat_s: float = 3600.0) -> None:
        self.handlers = FakeHandlers()
        self.subscription = FakePullSubscription(script, then=then, max_fetches=max_fetches)
        self.binder = FakeBinder(self.subscription)
        monkeypatch.setattr(terra.runtime.worker, "bind", self.binder)  # what Puller binds with
        self.worker = FairWorker(None, self.handlers, self.handlers.lifecycle,
                                 jobs=self.handlers.jobs, events=self.handlers.events,
                                 queue_window=queue_window, batch_max_images=batch_max_images,
                                 heartbeat_s=heartbeat_s, fetch_timeout_s=0.01)
        self.task: asyncio.Task | None = None

    def start(self) -> Harness:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def finish(self, grace_s: float = 1.0) -> None:
        await self.worker.stop(grace_s)
        await asyncio.wait_for(self.task, 5)  # re-raises whatever escaped run()


# --- positions and cancels --------------------------------------------------------------------


async def test_positions_are_announced_once_then_only_when_they_change(monkeypatch):
    a1, a2, b1 = command("a1", "alice"), command("a2", "alice"), command("b1", "bob")
    h = Harness(monkeypatch, [[msg_of(a1), msg_of(a2), msg_of(b1)]]).start()
    h.handlers.gate.clear()
    await wait_until(lambda: h.handlers.batches == [["a1"]])
    assert h.handlers.positions() == [("a1", 0), ("b1", 1), ("a2", 2)]
    assert h.worker.workload().running == ["a1"]
    assert sorted(h.worker.workload().holding) == ["a2", "b1"]

    h.handlers.gate.set()
    await wait_until(lambda: len(h.handlers.batches) == 3 and not h.worker.batch)
    await h.finish()
    assert h.handlers.batches == [["a1"], ["b1"], ["a2"]]
    assert h.handlers.positions() == [("a1", 0), ("b1", 1), ("a2", 2),
                                      ("b1", 0), ("a2", 1), ("a2", 0)]
    assert h.handlers.events.sent().count(QUEUED) == 3


async def test_a_position_that_did_not_change_is_not_announced_again(monkeypatch):
    first = [msg_of(command(j, u)) for j, u in
             [("a1", "alice"), ("b1", "bob"), ("a2", "alice"), ("b2", "bob")]]
    late = msg_of(command("c1", "carol"))  # arrives while a1 runs: a new user's turn
    h = Harness(monkeypatch, [first, [late]]).start()
    await wait_until(lambda: len(h.handlers.batches) == 5 and not h.worker.batch)
    await h.finish()
    assert h.handlers.batches == [["a1"], ["b1"], ["a2"], ["c1"], ["b2"]]
    assert h.handlers.positions() == [
        ("a1", 0), ("b1", 1), ("a2", 2), ("b2", 3),
        ("b1", 0), ("a2", 1), ("c1", 2),  # b2 is still 3rd: not said again
        ("a2", 0), ("c1", 1), ("b2", 2),
        ("c1", 0), ("b2", 1),
        ("b2", 0)]


async def test_a_job_cancelled_while_held_leaves_the_window_and_its_command_is_acked(
        monkeypatch):
    a1, b1 = command("a1", "alice"), command("b1", "bob")
    b1_msg = msg_of(b1)
    h = Harness(monkeypatch, [[msg_of(a1), b1_msg]]).start()
    h.handlers.gate.clear()
    await wait_until(lambda: h.handlers.batches == [["a1"]])
    await h.handlers.lifecycle.request_cancel(CancelJob(job_id="b1", user_id="bob",
                                                        kind=JobKind.GENERATION))
    assert await h.handlers.status("b1") is JobStatus.CANCELLED

    h.handlers.gate.set()
    await wait_until(lambda: b1_msg.calls)
    await h.finish()
    assert b1_msg.calls == [("ack",)]
    assert "b1" not in h.worker.window
    assert h.handlers.batches == [["a1"]]  # never generated
    assert [p for p in h.handlers.positions() if p[0] == "b1"] == [("b1", 1)]  # none stale


# --- batches ------------------------------------------------------------------------------------


async def test_compatible_jobs_join_a_batch_up_to_the_image_budget(monkeypatch):
    jobs = [command("a1", "alice"), command("b1", "bob", num_images=2),
            command("c1", "carol"), command("d1", "dave", steps=3)]
    messages = [msg_of(c) for c in jobs]
    h = Harness(monkeypatch, [messages], batch_max_images=3).start()
    await wait_until(lambda: all(m.calls for m in messages))
    await h.finish()
    assert h.handlers.batches == [["a1", "b1"], ["c1"], ["d1"]]
    assert [m.calls for m in messages] == [[("ack",)]] * 4


async def test_a_permanent_failure_fails_every_job_of_the_batch_once_and_acks_them(
        monkeypatch):
    messages = [msg_of(command("a1", "alice")), msg_of(command("b1", "bob"))]
    h = Harness(monkeypatch, [messages], batch_max_images=2)
    h.handlers.outcomes.append(JobFailure(FailureCode.OUT_OF_MEMORY, "out of memory"))
    h.start()
    await wait_until(lambda: all(m.calls for m in messages))
    await h.finish()

    assert h.handlers.batches == [["a1", "b1"]]
    assert [m.calls for m in messages] == [[("ack",)], [("ack",)]]
    failed = [e for e in h.handlers.events.attempts if e.type == FAILED]
    assert sorted(e.job_id for e in failed) == ["a1", "b1"]
    assert all(e.code is FailureCode.OUT_OF_MEMORY for e in failed)
    for job_id in ("a1", "b1"):
        assert await h.handlers.status(job_id) is JobStatus.FAILED


async def test_any_other_error_requeues_each_job_and_naks_it_with_a_delay(monkeypatch):
    messages = [msg_of(command("a1", "alice"), delivery=2),
                msg_of(command("b1", "bob"), delivery=3)]
    h = Harness(monkeypatch, [messages], batch_max_images=2)
    h.handlers.outcomes.append(RuntimeError("CUDA hiccup"))
    h.start()
    await wait_until(lambda: all(m.calls for m in messages))
    await h.finish()

    [[(a1_action, a1_delay)], [(b1_action, b1_delay)]] = [m.calls for m in messages]
    assert a1_action == b1_action == "nak"
    assert 1.0 <= a1_delay <= 2.0 and 2.0 <= b1_delay <= 4.0  # steps of 2 s and 4 s, jittered
    requeued = [e for e in h.handlers.events.attempts if e.type == REQUEUED]
    assert sorted(e.job_id for e in requeued) == ["a1", "b1"]
    for job_id in ("a1", "b1"):
        assert await h.handlers.status(job_id) is JobStatus.QUEUED


# --- what arrives -------------------------------------------------------------------------------


async def test_a_redelivered_command_of_a_finished_job_is_acked_and_not_held(monkeypatch):
    a1 = command("a1", "alice")
    redelivered = msg_of(a1, delivery=2)
    h = Harness(monkeypatch, [[redelivered]])
    await h.handlers.lifecycle.receive(ref_of(a1), 1)
    await h.handlers.lifecycle.fail(ref_of(a1), FailureCode.INTERNAL, "ended before")
    h.start()
    await wait_until(lambda: redelivered.calls)
    await h.finish()

    assert redelivered.calls == [("ack",)]
    assert h.handlers.batches == [] and len(h.worker.window) == 0
    assert h.handlers.events.types().count(FAILED) == 1  # announced again, stored once
    assert h.handlers.events.sent().count(FAILED) == 2


async def test_a_duplicate_delivery_of_a_held_job_is_not_held_twice(monkeypatch):
    b1, a1 = command("b1", "bob"), command("a1", "alice")
    first, duplicate = msg_of(a1), msg_of(a1, delivery=2)
    h = Harness(monkeypatch, [[msg_of(b1), first, duplicate]]).start()
    h.handlers.gate.clear()
    await wait_until(lambda: h.handlers.batches == [["b1"]])
    assert [q.job_id for q in h.worker.window.held()] == ["a1"]
    assert duplicate.calls == [("ack",)]

    h.handlers.gate.set()
    await wait_until(lambda: first.calls)
    await h.finish()
    assert h.handlers.batches == [["b1"], ["a1"]]
    assert first.calls == [("ack",)]


async def test_an_undecodable_command_fails_its_job_once_and_is_acked(monkeypatch):
    broken = FakeMsg(b'{"job_id": "a1", "user_id": "alice", "prompt": ""}')
    h = Harness(monkeypatch, [[broken]]).start()
    await wait_until(lambda: broken.calls)
    await h.finish()
    assert broken.calls == [("ack",)]
    assert await h.handlers.status("a1") is JobStatus.FAILED
    failed = [e for e in h.handlers.events.attempts if e.type == FAILED]
    assert len(failed) == 1 and failed[0].code is FailureCode.INVALID_INPUT
    assert h.handlers.batches == []


async def test_a_command_that_cannot_be_taken_now_is_handed_back_with_a_delay(monkeypatch):
    a1_msg = msg_of(command("a1", "alice"), delivery=2)
    h = Harness(monkeypatch, [[a1_msg]])
    h.handlers.take_errors.append(nats.errors.NoRespondersError())
    h.start()
    await wait_until(lambda: a1_msg.calls)
    await h.finish()
    [(action, delay)] = a1_msg.calls
    assert action == "nak" and 1.0 <= delay <= 2.0  # the second step (2 s), jittered
    assert h.handlers.batches == [] and len(h.worker.window) == 0


async def test_broker_faults_during_fill_are_waited_out(monkeypatch):
    a1_msg, b1_msg = msg_of(command("a1", "alice")), msg_of(command("b1", "bob"))
    h = Harness(monkeypatch, [
        nats.js.errors.ServiceUnavailableError(code=503, description="No Responders"),
        [a1_msg],
        nats.js.errors.NotFoundError(code=404, description="consumer not found"),
        [b1_msg],
    ]).start()
    await wait_until(lambda: a1_msg.calls and b1_msg.calls)
    await h.finish()  # nothing escaped run()
    assert h.handlers.batches == [["a1"], ["b1"]]
    assert h.binder.binds == 2  # bound again after the consumer vanished


async def test_a_command_that_arrives_while_stopping_is_handed_back_not_generated(
        monkeypatch):
    arrives, a1_msg = asyncio.Event(), msg_of(command("a1", "alice"))
    h = Harness(monkeypatch, [After(arrives, [a1_msg])]).start()
    await wait_until(lambda: h.subscription.fetches)  # a pull is pending
    await h.worker.stop(1.0)  # nothing held: stops at once
    arrives.set()  # the pending pull delivers after all
    await asyncio.wait_for(h.task, 5)
    assert h.handlers.batches == []
    assert a1_msg.calls == [("nak", None)]


async def test_an_idle_worker_yields_to_other_tasks(monkeypatch):
    a1_msg = msg_of(command("a1", "alice"))
    h = Harness(monkeypatch, [[a1_msg]], then=nats.errors.TimeoutError, max_fetches=200)
    h.start()
    await wait_until(lambda: a1_msg.calls)
    for _ in range(20):  # this test is the concurrent task: it must get to run
        await asyncio.sleep(0)
    assert not h.task.done(), f"the loop ended: {h.task.exception()!r}"
    await h.finish()


# --- stopping and keeping alive -------------------------------------------------------------------


async def test_stop_hands_back_the_held_commands(monkeypatch):
    a1_msg, b1_msg, c1_msg = (msg_of(command(j, u)) for j, u in
                              [("a1", "alice"), ("b1", "bob"), ("c1", "carol")])
    h = Harness(monkeypatch, [[a1_msg, b1_msg, c1_msg]]).start()
    h.handlers.gate.clear()
    await wait_until(lambda: h.handlers.batches == [["a1"]])

    await h.worker.stop(0.01)  # a1 runs on past the grace period
    assert b1_msg.calls == [("nak", None)] and c1_msg.calls == [("nak", None)]
    assert len(h.worker.window) == 0 and h.subscription.unsubscribed
    assert not h.worker.workload().pulling

    h.handlers.gate.set()  # the batch in hand still ends, and the loop with it
    await asyncio.wait_for(h.task, 5)
    assert a1_msg.calls == [("ack",)]
    assert h.handlers.batches == [["a1"]]


async def test_held_and_running_commands_are_kept_alive(monkeypatch):
    a1_msg, b1_msg = msg_of(command("a1", "alice")), msg_of(command("b1", "bob"))
    h = Harness(monkeypatch, [[a1_msg, b1_msg]], heartbeat_s=0.001).start()
    h.handlers.gate.clear()
    await wait_until(lambda: h.handlers.batches == [["a1"]])
    keep_alive = asyncio.create_task(h.worker.keep_alive())
    await wait_until(lambda: ("in_progress",) in a1_msg.calls
                     and ("in_progress",) in b1_msg.calls)
    keep_alive.cancel()
    h.handlers.gate.set()
    await wait_until(lambda: a1_msg.settlements and b1_msg.settlements)
    await h.finish()
    assert a1_msg.settlements == [("ack",)] and b1_msg.settlements == [("ack",)]


# --- Window (pure) ------------------------------------------------------------------------------


def window(capacity: int = 8, batch_images: int = 1) -> Window[tuple[int, str]]:
    """Items are (images, family): the same family can share a loop."""
    return Window(capacity, batch_images, images=lambda item: item[0],
                  compatible=lambda a, b: a[1] == b[1])


def test_positions_count_from_zero_the_next_to_run_and_are_said_once():
    w = window()
    w.add("a1", "alice", (1, "x"))
    w.add("b1", "bob", (1, "x"))
    assert [(q.job_id, p) for q, p in w.position_changes()] == [("a1", 0), ("b1", 1)]
    assert w.position_changes() == []  # nothing changed: nothing to say


def test_a_forgotten_announcement_is_made_again_and_only_that_one():
    w = window()
    w.add("a1", "alice", (1, "x"))
    w.add("b1", "bob", (1, "x"))
    w.position_changes()
    w.forget_announcement("b1")
    assert [(q.job_id, p) for q, p in w.position_changes()] == [("b1", 1)]


def test_a_job_held_already_is_not_held_twice_and_room_counts_what_is_held():
    w = window(capacity=2)
    assert w.add("a1", "alice", (1, "x"))
    assert not w.add("a1", "alice", (1, "x"))
    assert len(w) == 1 and w.room == 1
    w.add("b1", "bob", (1, "x"))
    assert w.room == 0


def test_next_batch_takes_the_next_job_in_turn_and_compatible_ones_within_the_budget():
    w = window(batch_images=4)
    w.add("a1", "alice", (2, "x"))
    w.add("a2", "alice", (1, "y"))  # incompatible with a1's loop
    w.add("b1", "bob", (3, "x"))  # compatible, but over what is left of the budget
    w.add("c1", "carol", (2, "x"))  # fits exactly
    w.add("d1", "dave", (1, "x"))  # the budget is spent
    assert [q.job_id for q in w.next_batch()] == ["a1", "c1"]
    assert [q.job_id for q in w.held()] == ["b1", "d1", "a2"]  # fair order kept
    assert [q.job_id for q in w.next_batch()] == ["b1", "d1"]
    assert [q.job_id for q in w.next_batch()] == ["a2"]
    assert w.next_batch() == []


def test_a_job_that_left_in_a_batch_and_comes_back_is_announced_again():
    w = window(batch_images=2)
    w.add("a1", "alice", (1, "x"))
    w.add("b1", "bob", (1, "x"))
    w.position_changes()
    assert [q.job_id for q in w.next_batch()] == ["a1", "b1"]  # b1 was announced at 1
    w.add("c1", "carol", (1, "x"))
    w.add("b1", "bob", (1, "x"))  # redelivered after a failed attempt: at 1 again
    assert [(q.job_id, p) for q, p in w.position_changes()] == [("c1", 0), ("b1", 1)]


def test_the_job_that_led_a_batch_and_comes_back_is_announced_again():
    w = window()
    w.add("a1", "alice", (1, "x"))
    w.position_changes()  # a1 at 0
    assert [q.job_id for q in w.next_batch()] == ["a1"]
    w.add("a1", "alice", (1, "x"))  # redelivered after a failed attempt: at 0 again
    assert [(q.job_id, p) for q, p in w.position_changes()] == [("a1", 0)]
