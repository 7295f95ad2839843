"""terra.jobs.lifecycle: one story per job (one queued, one started, requeued once per attempt,
one ending) decided by the job's state, over an in-memory KV bucket and event stream."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import timedelta

import nats.errors
import pytest
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts.auth import AccountDeleted
from contracts.base import utcnow
from contracts.generation import (
    GeneratedImage,
    GenerateImage,
    GenerationProgressed,
    ImageGenerated,
)
from contracts.jobs import CancelJob, FailureCode, JobKind, JobState, JobStatus
from contracts.topology import job_key
from generator_service.jobs import GenerationEvents, ref_of
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import (
    JobFailure,
    JobLifecycle,
    JobRef,
    erase_twice,
    fields_of,
    ref_from_raw,
)
from terra.jobs.store import JobStore
from terra.runtime.logs import JsonFormatter, TextFormatter
from terra.runtime.worker import AgainLater, PermanentFailure
from tests.fakes import FakeEventPublisher, FakeKeyValue, wait_until

KIND = JobKind.GENERATION
REF = JobRef("job-1", "alice", KIND, "req-1")
KEY = job_key(REF.user_id, REF.job_id)
MALLORY = JobRef("job-1", "mallory", KIND, "req-2")

QUEUED = "generation.queued.v1"
STARTED = "generation.started.v1"
COMPLETED = "generation.image_generated.v1"
CANCELLED = "generation.cancelled.v1"
FAILED = "job.failed.v1"
REQUEUED = "job.requeued.v1"


class Jobs:
    """A lifecycle over fakes, and what it touched."""

    def __init__(self, *, max_attempts: int = 3, progress_interval_s: float = 0.5,
                 on_end: bool = True) -> None:
        self.journal: list[tuple] = []
        self.kv = FakeKeyValue("jobs")
        self.store = JobStore({KIND: self.kv})
        self.events = FakeEventPublisher(self.journal)
        self.ended: list[JobState] = []
        self.deleted = DeletedAccounts(FakeKeyValue("deleted"))
        self.lifecycle = JobLifecycle(
            KIND, self.store, self.events, GenerationEvents(),
            on_end=self._on_end if on_end else None, deleted_accounts=self.deleted,
            progress_interval_s=progress_interval_s, max_attempts=max_attempts)

    async def _on_end(self, job: JobState) -> None:
        self.ended.append(job)
        self.journal.append(("on_end", job.status))

    async def state(self, job_id: str = REF.job_id) -> JobState | None:
        return await self.store.get(REF.user_id, job_id)

    async def running(self, ref: JobRef = REF) -> JobState:
        await self.lifecycle.receive(ref, 1)
        return await self.lifecycle.begin(ref)


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


def completed(ref: JobRef = REF) -> ImageGenerated:
    return ImageGenerated(user_id=ref.user_id, job_id=ref.job_id, images=[GeneratedImage(
        image_id=f"{ref.job_id}-0", key="images/k.png", width=64, height=64, seed=1)])


def progressed(step: int, ref: JobRef = REF) -> GenerationProgressed:
    return GenerationProgressed(message_id=f"{ref.job_id}-progress-{step}", user_id=ref.user_id,
                                job_id=ref.job_id, step=step, total_steps=4)


# --- arrival ------------------------------------------------------------------------------------


async def test_a_command_for_an_unknown_job_creates_it_queued_and_says_so_once(jobs):
    job = await jobs.lifecycle.receive(REF, 1)
    again = await jobs.lifecycle.receive(REF, 2)  # a redelivery before it started

    assert job.status is JobStatus.QUEUED and again.status is JobStatus.QUEUED
    assert (await jobs.state()).status is JobStatus.QUEUED
    assert jobs.events.sent() == [QUEUED]
    assert len(jobs.events.attempts) == 1
    queued = jobs.events.published[0]
    assert queued.message_id == "job-1-queued" and queued.correlation_id == "req-1"


async def test_a_job_another_worker_created_meanwhile_is_not_announced_twice(jobs):
    theirs = JobState(job_id=REF.job_id, user_id=REF.user_id, kind=KIND, detail="theirs")
    await jobs.store.create(theirs)  # created by another worker just after we looked:
    jobs.kv.fail_next("get", KeyNotFoundError())  # our first look still missed it

    job = await jobs.lifecycle.receive(REF, 1)
    assert job.detail == "theirs"
    assert jobs.events.sent() == []  # the worker that created it announces it


async def test_a_job_of_milliseconds_is_not_recorded_on_arrival(jobs):
    job = await jobs.lifecycle.receive(REF, 1, create=False, result={"k": "v"})

    assert job.status is JobStatus.QUEUED and job.result == {"k": "v"}
    assert await jobs.state() is None
    assert jobs.events.published == []


async def test_a_command_naming_another_users_job_never_touches_it(jobs):
    """Jobs are keyed by their owner: the same id under another user is another job."""
    await jobs.lifecycle.receive(REF, 1)
    before = await jobs.state()

    theirs = await jobs.lifecycle.receive(MALLORY, 1)
    assert theirs.user_id == MALLORY.user_id
    assert await jobs.state() == before


async def test_a_finished_job_announces_its_stored_ending_again_under_the_same_id(jobs):
    await jobs.lifecycle.receive(REF, 1)
    assert await jobs.lifecycle.succeed(REF, completed(), result={"images": 1})

    assert await jobs.lifecycle.receive(REF, 2) is None
    endings = [e for e in jobs.events.attempts if e.type == COMPLETED]
    assert len(endings) == 2 and endings[0] == endings[1]  # the same event, same message id
    assert jobs.events.types() == [QUEUED, COMPLETED]  # the stream kept one
    assert [job.status for job in jobs.ended] == [JobStatus.SUCCEEDED] * 2  # clean-up again


async def test_a_job_still_running_on_a_redelivery_is_queued_again_and_says_why_once(jobs):
    await jobs.running()

    job = await jobs.lifecycle.receive(REF, 2, resumed_from_step=7)
    assert job.status is JobStatus.QUEUED
    assert await jobs.lifecycle.receive(REF, 3) is not None  # queued now: nothing more

    stored = await jobs.state()
    assert stored.status is JobStatus.QUEUED and "stopped" in stored.detail
    requeued = jobs.events.of_type(REQUEUED)
    assert len(requeued) == 1
    assert requeued[0].attempt == 1 and requeued[0].resumed_from_step == 7
    assert requeued[0].reason == stored.detail
    assert requeued[0].message_id == "job-1-requeued-1"


async def test_a_first_delivery_of_a_running_job_is_not_requeued(jobs):
    await jobs.running()
    job = await jobs.lifecycle.receive(REF, 1)
    assert job.status is JobStatus.RUNNING
    assert jobs.events.of_type(REQUEUED) == []


# --- begin ------------------------------------------------------------------------------------


async def test_begin_starts_the_job_and_says_started_only_the_first_time(jobs):
    first = await jobs.running()
    assert first.status is JobStatus.RUNNING and first.attempts == 1
    assert first.started_at is not None

    await jobs.lifecycle.receive(REF, 2)  # its worker died: queued again
    second = await jobs.lifecycle.begin(REF)
    assert second.status is JobStatus.RUNNING and second.attempts == 2
    assert second.started_at == first.started_at
    assert jobs.events.sent() == [QUEUED, STARTED, REQUEUED]


async def test_begin_fails_the_job_once_max_attempts_have_started():
    jobs = Jobs(max_attempts=2)
    await jobs.running()
    await jobs.lifecycle.receive(REF, 2)
    assert await jobs.lifecycle.begin(REF) is not None
    await jobs.lifecycle.receive(REF, 3)

    assert await jobs.lifecycle.begin(REF) is None
    job = await jobs.state()
    assert job.status is JobStatus.FAILED and job.attempts == 2
    assert job.error.code is FailureCode.DELIVERY_EXHAUSTED
    failed = jobs.events.of_type(FAILED)
    assert len(failed) == 1 and failed[0].code is FailureCode.DELIVERY_EXHAUSTED


async def test_begin_cancels_a_job_whose_cancel_was_requested_and_skips_the_work(jobs):
    await jobs.lifecycle.receive(REF, 1)
    await jobs.store.update(REF.user_id, REF.job_id,
                            lambda s: s.model_copy(update={"cancel_requested": True}))

    assert await jobs.lifecycle.begin(REF) is None
    job = await jobs.state()
    assert job.status is JobStatus.CANCELLED and job.attempts == 0
    assert jobs.events.sent() == [QUEUED, CANCELLED]


async def test_begin_does_nothing_for_an_ended_or_unknown_job(jobs):
    await jobs.lifecycle.receive(REF, 1)
    await jobs.lifecycle.fail(REF, FailureCode.INTERNAL, "broken")

    assert await jobs.lifecycle.begin(REF) is None
    assert await jobs.lifecycle.begin(JobRef("nobody", "alice", KIND, "r")) is None
    assert (await jobs.state()).status is JobStatus.FAILED
    assert jobs.events.sent() == [QUEUED, FAILED]


# --- progress -----------------------------------------------------------------------------------


async def test_progress_publishes_every_event_but_writes_the_job_at_most_every_interval():
    jobs = Jobs(progress_interval_s=3600.0)
    await jobs.running()
    writes = jobs.kv.writes(KEY)

    await jobs.lifecycle.progress(REF, progressed(1), 0.25)
    await jobs.lifecycle.progress(REF, progressed(2), 0.5)
    await jobs.lifecycle.progress(REF, progressed(3), 0.75)

    assert [e.step for e in jobs.events.of_type("generation.progressed.v1")] == [1, 2, 3]
    assert jobs.kv.writes(KEY) == writes + 1
    assert (await jobs.state()).progress == 0.25


async def test_progress_with_no_interval_writes_each_fraction_and_never_claims_done():
    jobs = Jobs(progress_interval_s=0.0)
    await jobs.running()
    await jobs.lifecycle.progress(REF, progressed(1), 0.5)
    assert (await jobs.state()).progress == 0.5
    await jobs.lifecycle.progress(REF, progressed(4), 1.0)
    assert (await jobs.state()).progress == 0.99  # 1.0 belongs to the ending


async def test_progress_after_the_ending_leaves_the_ended_job_alone():
    jobs = Jobs(progress_interval_s=0.0)
    await jobs.running()
    await jobs.lifecycle.succeed(REF, completed(), result={})
    writes = jobs.kv.writes(KEY)

    published = len(jobs.events.attempts)
    await jobs.lifecycle.progress(REF, progressed(3), 0.75)
    job = await jobs.state()
    assert job.status is JobStatus.SUCCEEDED and job.progress == 1.0
    assert jobs.kv.writes(KEY) == writes
    # No progress frame after the ending: the story is over.
    assert len(jobs.events.attempts) == published


# --- endings ------------------------------------------------------------------------------------


async def test_a_job_ends_once_and_a_second_ending_publishes_nothing(jobs):
    await jobs.running()
    assert await jobs.lifecycle.succeed(REF, completed(), result={"images": 1})

    assert not await jobs.lifecycle.fail(REF, FailureCode.INTERNAL, "late failure")
    assert not await jobs.lifecycle.cancel(REF, "late cancel")
    assert not await jobs.lifecycle.succeed(REF, completed(), result={"images": 2})

    job = await jobs.state()
    assert job.status is JobStatus.SUCCEEDED and job.result == {"images": 1}
    assert job.progress == 1.0
    assert jobs.events.sent() == [QUEUED, STARTED, COMPLETED]
    assert len(jobs.ended) == 1


async def test_the_ending_event_is_stored_with_the_ending(jobs):
    await jobs.running()
    await jobs.lifecycle.fail(REF, FailureCode.NOT_FOUND, "The LoRA no longer exists.")

    job = await jobs.state()
    failed = jobs.events.of_type(FAILED)[0]
    assert job.ending == failed.model_dump(mode="json")
    assert failed.message_id == "job-1-failed" and failed.correlation_id == "req-1"
    assert job.error.code is FailureCode.NOT_FOUND and job.detail == failed.reason


@pytest.mark.parametrize("ending", ["succeed", "fail", "cancel"])
async def test_nobody_ends_another_users_job(jobs, ending):
    await jobs.lifecycle.receive(REF, 1)
    if ending == "succeed":
        ended = await jobs.lifecycle.succeed(MALLORY, completed(MALLORY), result={})
    elif ending == "fail":
        ended = await jobs.lifecycle.fail(MALLORY, FailureCode.INTERNAL, "no")
    else:
        ended = await jobs.lifecycle.cancel(MALLORY, "no")

    # Whatever it does to a job of its own, alice's is untouched.
    assert (await jobs.state()).status is JobStatus.QUEUED
    assert not [job for job in jobs.ended if job.user_id == REF.user_id]
    assert ended is (ending != "cancel")  # no record of its own to cancel


@pytest.mark.parametrize("ending", ["succeed", "fail", "cancel"])
async def test_the_ending_clean_up_runs_before_the_ending_is_announced(jobs, ending):
    await jobs.running()
    jobs.journal.clear()
    if ending == "succeed":
        await jobs.lifecycle.succeed(REF, completed(), result={})
    elif ending == "fail":
        await jobs.lifecycle.fail(REF, FailureCode.INTERNAL, "broken")
    else:
        await jobs.lifecycle.cancel(REF, "asked to")

    assert [step for step, _ in jobs.journal] == ["on_end", "publish"]
    assert jobs.ended[0].status.is_terminal  # the clean-up sees the ended job


async def test_a_job_of_milliseconds_is_recorded_already_ended(jobs):
    await jobs.lifecycle.receive(REF, 1, create=False)
    assert await jobs.lifecycle.succeed(REF, completed(), result={"optimized": "x"})

    job = await jobs.state()
    assert job.status is JobStatus.SUCCEEDED and job.result == {"optimized": "x"}
    assert job.ending["type"] == COMPLETED
    assert jobs.events.sent() == [COMPLETED]
    assert not await jobs.lifecycle.succeed(REF, completed(), result={})
    assert jobs.events.sent() == [COMPLETED]


# --- cancels ------------------------------------------------------------------------------------


def cancel_command(ref: JobRef = REF) -> CancelJob:
    return CancelJob(job_id=ref.job_id, user_id=ref.user_id, kind=KIND,
                     correlation_id="req-cancel")


async def test_a_cancel_ends_a_queued_job_at_once(jobs):
    await jobs.lifecycle.receive(REF, 1)
    await jobs.lifecycle.request_cancel(cancel_command())

    job = await jobs.state()
    assert job.status is JobStatus.CANCELLED and not job.cancel_requested
    assert jobs.events.sent() == [QUEUED, CANCELLED]
    assert jobs.events.published[-1].correlation_id == "req-cancel"


async def test_a_cancel_only_flags_a_running_job_for_its_worker(jobs):
    await jobs.running()
    await jobs.lifecycle.request_cancel(cancel_command())

    job = await jobs.state()
    assert job.status is JobStatus.RUNNING and job.cancel_requested
    assert jobs.events.sent() == [QUEUED, STARTED]


async def test_a_cancel_from_another_user_or_for_an_ended_job_changes_nothing(jobs):
    await jobs.lifecycle.receive(REF, 1)
    await jobs.lifecycle.request_cancel(cancel_command(MALLORY))
    assert (await jobs.state()).status is JobStatus.QUEUED

    await jobs.lifecycle.succeed(REF, completed(), result={})
    await jobs.lifecycle.request_cancel(cancel_command())
    job = await jobs.state()
    assert job.status is JobStatus.SUCCEEDED and not job.cancel_requested
    assert jobs.events.sent() == [QUEUED, COMPLETED]


async def test_watching_for_a_cancel_keeps_polling_through_store_errors(jobs, caplog):
    await jobs.running()
    await jobs.lifecycle.request_cancel(cancel_command())
    jobs.kv.fail_next("get", nats.errors.TimeoutError(), nats.errors.NoRespondersError())
    looks_before = jobs.kv.ops.count(("get", KEY))
    cancel = threading.Event()

    await asyncio.wait_for(jobs.lifecycle.watch_for_cancel(REF, cancel, 0.001), 5)
    assert cancel.is_set()
    assert jobs.kv.ops.count(("get", KEY)) - looks_before == 3  # 2 failed, 1 saw it
    warnings = [r for r in caplog.records if r.getMessage() == "cancel check failed"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)


async def test_watching_for_a_cancel_also_stops_the_work_of_a_job_that_ended(jobs):
    await jobs.running()
    cancel = threading.Event()
    watcher = asyncio.create_task(jobs.lifecycle.watch_for_cancel(REF, cancel, 0.001))
    await wait_until(lambda: jobs.kv.ops.count(("get", KEY)) >= 4)
    assert not cancel.is_set()  # running, no cancel asked: the work goes on
    await jobs.lifecycle.fail(REF, FailureCode.INTERNAL, "ended elsewhere")
    await asyncio.wait_for(watcher, 5)
    assert cancel.is_set()


# --- deleted accounts ---------------------------------------------------------------------------


async def test_a_command_of_a_deleted_account_runs_nothing_and_records_nothing(jobs):
    await jobs.deleted.mark(REF.user_id, utcnow())

    assert await jobs.lifecycle.receive(REF, 1) is None
    assert await jobs.state() is None
    assert jobs.journal == []


async def test_a_job_whose_account_went_while_it_ran_ends_silently(jobs):
    await jobs.running()
    await jobs.deleted.mark(REF.user_id, utcnow())

    assert not await jobs.lifecycle.succeed(REF, completed(), {"images": []})
    assert not await jobs.lifecycle.fail(REF, FailureCode.INTERNAL, "late")
    assert jobs.events.sent() == [QUEUED, STARTED]  # no ending said to no one
    assert jobs.ended == []  # nor its clean-up (the erasure does it)
    assert (await jobs.state()).status is JobStatus.RUNNING  # the erasure removes it


async def test_the_work_of_a_job_erased_with_its_account_stops(jobs):
    await jobs.running()
    cancel = threading.Event()
    watcher = asyncio.create_task(jobs.lifecycle.watch_for_cancel(REF, cancel, 0.001))
    await jobs.kv.purge(KEY)  # no record: not reason enough while the account lives
    await wait_until(lambda: jobs.kv.ops.count(("get", KEY)) >= 4)
    assert not cancel.is_set()

    await jobs.deleted.mark(REF.user_id, utcnow())
    await asyncio.wait_for(watcher, 5)
    assert cancel.is_set()


async def test_an_account_is_asked_about_until_it_is_deleted_then_remembered():
    kv = FakeKeyValue("deleted")
    accounts = DeletedAccounts(kv)
    assert not await accounts.is_deleted("alice")
    await accounts.mark("alice", utcnow())
    assert await accounts.is_deleted("alice")
    await kv.purge("alice")  # the mark expired: the answer stays (a deletion is final)
    assert await accounts.is_deleted("alice")
    assert [op for op in kv.ops if op[0] == "get"] == [("get", "alice")] * 2


# --- attempts -----------------------------------------------------------------------------------


async def test_a_job_failure_in_an_attempt_fails_the_job_for_good(jobs):
    await jobs.running()

    async def work():
        raise JobFailure(FailureCode.INVALID_INPUT, "unknown style")

    with pytest.raises(PermanentFailure):
        await jobs.lifecycle.attempt(REF, work)
    job = await jobs.state()
    assert job.status is JobStatus.FAILED and job.error.code is FailureCode.INVALID_INPUT
    assert job.error.reason == "unknown style"
    assert jobs.events.of_type(REQUEUED) == []
    assert len(jobs.events.of_type(FAILED)) == 1


async def test_any_other_error_in_an_attempt_queues_the_job_again_and_is_raised(jobs):
    await jobs.running()

    async def work():
        raise ConnectionResetError("storage went away")

    with pytest.raises(ConnectionResetError):
        await jobs.lifecycle.attempt(REF, work)
    job = await jobs.state()
    assert job.status is JobStatus.QUEUED
    requeued = jobs.events.of_type(REQUEUED)
    assert len(requeued) == 1 and requeued[0].attempt == 1
    assert jobs.events.of_type(FAILED) == []


async def test_a_permanent_failure_in_an_attempt_passes_through_untouched(jobs):
    await jobs.running()

    async def work():
        raise PermanentFailure("undecodable")

    with pytest.raises(PermanentFailure):
        await jobs.lifecycle.attempt(REF, work)
    assert (await jobs.state()).status is JobStatus.RUNNING
    assert jobs.events.sent() == [QUEUED, STARTED]


# --- the job's life in the logs -----------------------------------------------------------------

PROMPT = "a lighthouse only alice has seen"


@pytest.fixture
def logged(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every line of every logger, for the prompt search
    return caplog


def job_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "terra.jobs.lifecycle" and hasattr(r, "step")]


def assert_followed(lines: list[logging.LogRecord], steps: list[str],
                    correlation_ids: list[str] | None = None) -> None:
    """The steps in order, each an INFO line naming the job, its kind and its request,
    as fields, and so in a text log line too (what `terra up` writes)."""
    assert [line.step for line in lines] == steps
    correlation_ids = correlation_ids or [REF.correlation_id] * len(steps)
    for line, correlation_id in zip(lines, correlation_ids, strict=True):
        assert line.levelno == logging.INFO
        assert (line.job_id, line.kind, line.correlation_id) == (
            REF.job_id, KIND.value, correlation_id)
        text = TextFormatter("svc").format(line)
        assert all(part in text for part in (f"job_id={REF.job_id}", f"kind={KIND.value}",
                                             f"correlation_id={correlation_id}", line.step))


def assert_no_prompt(caplog) -> None:
    """Not in any line, however it is written out (JSON with every field, or text)."""
    as_json, as_text = JsonFormatter("test"), TextFormatter("test")
    for record in caplog.records:
        assert PROMPT not in as_json.format(record) + as_text.format(record)


async def test_a_job_that_succeeds_is_followed_in_the_logs_without_its_prompt(jobs, logged):
    ref = ref_of(GenerateImage(job_id=REF.job_id, user_id=REF.user_id, prompt=PROMPT,
                               model="schnell", steps=4, correlation_id=REF.correlation_id))
    await jobs.lifecycle.receive(ref, 1)
    await jobs.lifecycle.begin(ref)
    await jobs.lifecycle.progress(ref, progressed(1, ref), 0.25)
    await jobs.lifecycle.succeed(ref, completed(ref), result={"prompt": PROMPT})

    lines = job_lines(logged)
    assert_followed(lines, ["received", "started", "ended"])
    received, started, ended = lines
    assert received.delivery == 1 and received.status == "queued"
    assert started.attempt == 1
    assert ended.outcome == "succeeded" and ended.duration_s >= 0
    assert "outcome=succeeded" in TextFormatter("svc").format(ended)
    assert_no_prompt(logged)


async def test_a_job_that_fails_logs_its_ending_with_the_code_not_the_reason(jobs, logged):
    await jobs.running()

    async def work():
        raise JobFailure(FailureCode.INVALID_INPUT, f"cannot draw {PROMPT}")

    with pytest.raises(PermanentFailure):
        await jobs.lifecycle.attempt(REF, work)
    lines = job_lines(logged)
    assert_followed(lines, ["received", "started", "ended"])
    assert (lines[-1].outcome, lines[-1].code) == ("failed", "invalid_input")
    assert_no_prompt(logged)


async def test_a_requeued_job_logs_each_attempt(jobs, logged):
    await jobs.running()
    await jobs.lifecycle.receive(REF, 2)  # its worker died
    await jobs.lifecycle.begin(REF)

    lines = job_lines(logged)
    assert_followed(lines, ["received", "started", "received", "requeued", "started"])
    assert (lines[2].delivery, lines[2].status) == (2, "running")
    assert lines[3].attempt == 1 and "stopped" in lines[3].reason
    assert lines[4].attempt == 2


async def test_a_cancelled_job_logs_the_request_then_its_ending(jobs, logged):
    await jobs.running()
    await jobs.lifecycle.request_cancel(cancel_command())
    await jobs.lifecycle.cancel(REF, "cancelled while running")  # its worker stops

    lines = job_lines(logged)
    assert_followed(lines, ["received", "started", "cancel requested", "ended"],
                    ["req-1", "req-1", "req-cancel", "req-1"])
    assert lines[2].status == "running"
    assert lines[3].outcome == "cancelled"


async def test_a_job_cancelled_while_queued_ends_under_the_cancels_request(jobs, logged):
    await jobs.lifecycle.receive(REF, 1)
    await jobs.lifecycle.request_cancel(cancel_command())

    lines = job_lines(logged)
    assert_followed(lines, ["received", "cancel requested", "ended"],
                    ["req-1", "req-cancel", "req-cancel"])
    assert lines[-1].outcome == "cancelled"


async def test_a_jobs_duration_counts_from_its_record_or_its_arrival(jobs, logged):
    await jobs.store.create(JobState(job_id=REF.job_id, user_id=REF.user_id, kind=KIND,
                                     created_at=utcnow() - timedelta(seconds=30)))
    await jobs.lifecycle.receive(REF, 1)
    await jobs.lifecycle.fail(REF, FailureCode.INTERNAL, "broken")
    # A job of milliseconds has no record until it ends: from its command's arrival.
    quick = JobRef("job-2", REF.user_id, KIND, REF.correlation_id)
    await jobs.lifecycle.receive(quick, 1, create=False)
    await asyncio.sleep(0.05)
    await jobs.lifecycle.succeed(quick, completed(quick), result={})

    recorded, unrecorded = [line for line in job_lines(logged) if line.step == "ended"]
    assert 30 <= recorded.duration_s < 60
    assert 0.05 <= unrecorded.duration_s < 30


# --- commands too broken to decode ------------------------------------------------------------


def raw(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_ref_from_raw_names_the_job_of_a_broken_command():
    ref = ref_from_raw(raw(job_id="job-1", user_id="alice", correlation_id="req-9",
                           prompt=""), KIND)
    assert ref == JobRef("job-1", "alice", KIND, "req-9")


@pytest.mark.parametrize("correlation", [None, "", "x" * 129, 42, ["req"]])
def test_ref_from_raw_falls_back_to_the_job_id_for_a_missing_or_odd_correlation_id(
        correlation):
    fields = {"job_id": "job-1", "user_id": "alice"}
    if correlation is not None:
        fields["correlation_id"] = correlation
    assert ref_from_raw(raw(**fields), KIND).correlation_id == "job-1"


@pytest.mark.parametrize("bad_id", ["a.b", "*", ">", "a b", "", "x" * 65, "j\n", 7, None])
@pytest.mark.parametrize("field", ["job_id", "user_id"])
def test_ref_from_raw_refuses_ids_that_would_break_subjects_or_keys(field, bad_id):
    fields = {"job_id": "job-1", "user_id": "alice", field: bad_id}
    assert ref_from_raw(raw(**fields), KIND) is None


@pytest.mark.parametrize("body", [
    raw(user_id="alice"), raw(job_id="job-1"), b"not json", b"", b"[1, 2]", b'"job-1"',
    b"null", b"\xff\xfe",
], ids=["no-job-id", "no-user-id", "not-json", "empty", "array", "string", "null", "bytes"])
def test_ref_from_raw_refuses_bodies_without_both_ids(body):
    assert ref_from_raw(body, KIND) is None


class Nested(BaseModel):
    size: int


class Request(BaseModel):
    job_id: str
    user_id: str
    nested: Nested


def test_fields_of_names_every_field_a_validation_error_names():
    with pytest.raises(ValidationError) as raised:
        Request.model_validate({"nested": {"size": "big"}})
    assert fields_of(raised.value) == "job_id, user_id, nested.size"


def test_fields_of_names_the_body_when_the_error_is_about_the_whole_of_it():
    with pytest.raises(ValidationError) as raised:
        TypeAdapter(int).validate_python("not a number")
    assert fields_of(raised.value) == "body"


async def test_an_erasure_is_done_now_and_once_more_when_the_deletion_is_old_enough():
    passes = []

    async def erase() -> None:
        passes.append(len(passes) + 1)

    deleted = AccountDeleted(user_id="alice")
    at = deleted.occurred_at
    with pytest.raises(AgainLater) as again:
        await erase_twice(erase, deleted, 1, 60, now=lambda: at + timedelta(seconds=1))
    assert again.value.delay_s == 59 and passes == [1]
    await erase_twice(erase, deleted, 2, 60, now=lambda: at + timedelta(seconds=60))
    assert passes == [1, 2]  # the second pass ends it


async def test_a_first_pass_that_failed_still_gets_its_later_pass():
    async def erase() -> None:
        pass

    deleted = AccountDeleted(user_id="alice")
    at = deleted.occurred_at
    # The first delivery's erasure raised; the redelivery 5 s on erases, and waits the rest.
    with pytest.raises(AgainLater) as again:
        await erase_twice(erase, deleted, 2, 60, now=lambda: at + timedelta(seconds=5))
    assert again.value.delay_s == 55


async def test_a_late_or_skewed_first_delivery_still_waits_once():
    async def erase() -> None:
        pass

    deleted = AccountDeleted(user_id="alice")
    # Delivered 10 minutes late (the worker was down), or our clock is ahead.
    with pytest.raises(AgainLater) as again:
        await erase_twice(erase, deleted, 1, 60,
                          now=lambda: deleted.occurred_at + timedelta(minutes=10))
    assert again.value.delay_s == 15  # a quarter of the pass: a store under way finishes
    # A clock behind auth_service's never waits longer than the pass itself.
    with pytest.raises(AgainLater) as behind:
        await erase_twice(erase, deleted, 1, 60,
                          now=lambda: deleted.occurred_at - timedelta(minutes=10))
    assert behind.value.delay_s == 60
