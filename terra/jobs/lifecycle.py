"""One job lifecycle for every service that runs jobs (prompt, training, generation).

A job's story on the wire is always the same: one `queued`, position changes (where a
service has positions), one `started`, progress, one ending (`completed`, `failed` or
`cancelled`). A job that had started and must wait for another attempt says so once per
attempt with `job.requeued.v1`, instead of repeating `queued` or `started`.

The job's state in the jobs KV bucket decides every step (revision-checked writes, and
only the moves in `JOB_TRANSITIONS`), so a redelivered command, a stale worker or a
cancel racing a completion can never end a job twice. The ending event is stored with
the ending; a redelivery that meets a finished job publishes it again under the same
message id (the stream drops it as a duplicate if it was stored), so an ending recorded
just before a crash still reaches its user, and runs the ending's clean-up again.

Services keep only their domain steps: what to run, and their own events (`JobEvents`).

Each step of a job's life (received, started, requeued, cancel requested, ended) is one
INFO line naming the job, its kind and its request, and nothing a user wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from nats.aio.msg import Msg
from pydantic import TypeAdapter, ValidationError

from contracts.auth import AccountDeleted
from contracts.base import Event, utcnow
from contracts.ids import Id
from contracts.jobs import (
    CancelJob,
    FailureCode,
    JobError,
    JobFailed,
    JobKind,
    JobRequeued,
    JobState,
    JobStatus,
)
from contracts.registry import EVENTS
from terra.errors import TerraError
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.store import InvalidTransition, JobStore
from terra.nats.events import EventPublisher
from terra.nats.faults import BROKER_ERRORS
from terra.runtime.worker import AgainLater, Handle, PermanentFailure, handling

log = logging.getLogger(__name__)
_ID = TypeAdapter(Id)
_RECENT = 10_000  # jobs a process remembers (endings, arrivals of unrecorded jobs)


@dataclass(frozen=True)
class JobRef:
    """What the lifecycle needs to know of a job: whose, what kind, which request."""

    job_id: str
    user_id: str
    kind: JobKind
    correlation_id: str

    @classmethod
    def of(cls, command: Any, kind: JobKind) -> JobRef:
        return cls(command.job_id, command.user_id, kind, command.correlation_id)


class JobEvents(Protocol):
    """A domain's own events about its jobs (`failed` and `requeued` are common to all)."""

    def queued(self, job: JobState) -> Event | None: ...

    def started(self, job: JobState) -> Event | None: ...

    def cancelled(self, job: JobState) -> Event: ...


class JobFailure(TerraError):
    """Raised by a domain step: the job cannot succeed (bad input, a missing LoRA). It is
    failed once with this code and reason, and its command is not retried."""

    def __init__(self, code: FailureCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _AlreadyEnded(TerraError):
    pass


OnEnd = Callable[[JobState], Awaitable[None]]


class JobLifecycle:
    def __init__(self, kind: JobKind, jobs: JobStore, events: EventPublisher,
                 domain_events: JobEvents, *, on_end: OnEnd | None = None,
                 deleted_accounts: DeletedAccounts | None = None,
                 progress_interval_s: float = 0.5, max_attempts: int = 3) -> None:
        self.kind = kind
        self.deleted_accounts = deleted_accounts
        self.jobs = jobs
        self.events = events
        self.domain_events = domain_events
        self.on_end = on_end
        self.progress_interval_s = progress_interval_s
        self.max_attempts = max_attempts  # attempts that started work (held ones do not count)
        self._progress_written: dict[str, float] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # recent endings in this process
        # When the jobs recorded only as they end arrived: their durations count from here.
        self._arrived: OrderedDict[str, datetime] = OrderedDict()

    # --- arrival and start -----------------------------------------------------------

    async def receive(self, ref: JobRef, delivery: int, *, create: bool = True,
                      result: dict[str, Any] | None = None,
                      resumed_from_step: int | None = None) -> JobState | None:
        """The job's state as its command arrives, or None when there is nothing to do:
        it finished (its ending is announced again), or the account was deleted (nothing
        of it runs, nothing is recorded).

        A job published straight to NATS (an operator) has no record yet: it is created
        queued, unless `create` is False (a job of milliseconds is recorded once, when it
        ends: the state returned is not stored).
        A job still marked running on a redelivery lost its worker: it is queued again
        and says so.
        """
        if await self.account_gone(ref):
            log.info("command of a deleted account dropped", extra={"job_id": ref.job_id})
            return None
        job = await self.jobs.get(ref.user_id, ref.job_id)
        if job is None and not create:  # a job of milliseconds: queued, not stored
            job = JobState(job_id=ref.job_id, user_id=ref.user_id, kind=self.kind,
                           result=result or {})
            _remember(self._arrived, ref.job_id, job.created_at)
        elif job is None:
            job = await self._create(ref, result or {})
        _log_step(ref, "received", delivery=delivery, status=job.status.value)
        if job.status.is_terminal:
            await self._announce_ending_again(job)
            return None
        if job.status is JobStatus.RUNNING and delivery > 1:
            job = await self.requeue(ref, "The worker running it stopped; it will be "
                                     "picked up again.", resumed_from_step=resumed_from_step)
        return job

    async def begin(self, ref: JobRef) -> JobState | None:
        """Queued -> running; `started` the first time only. None when it ended or a
        cancel came in meanwhile, or the account was deleted (the caller skips the work)."""
        if await self.account_gone(ref):
            return None

        def start(state: JobState) -> JobState:
            if state.status.is_terminal:
                raise _AlreadyEnded
            return state.model_copy(update={
                "status": JobStatus.RUNNING, "attempts": state.attempts + 1,
                "started_at": state.started_at or utcnow()})

        current = await self.jobs.get(ref.user_id, ref.job_id)
        if current is None or current.status.is_terminal or current.cancel_requested:
            if current is not None and current.cancel_requested:
                await self.cancel(ref, "cancelled before it started")
            return None
        if current.attempts >= self.max_attempts:
            await self.dead_letter(ref)
            return None
        if current.started_at is None:
            # The event first: a crash between the two repeats it under the same id.
            started = self.domain_events.started(current)
            if started is not None:
                await self.events.publish(_stamp(started, f"{ref.job_id}-started", ref))
        try:
            job = await self.jobs.update(ref.user_id, ref.job_id, start)
        except (_AlreadyEnded, InvalidTransition):
            return None
        _log_step(ref, "started", attempt=job.attempts)
        return job

    # --- progress and cancels ------------------------------------------------------------

    async def progress(self, ref: JobRef, event: Event, fraction: float) -> None:
        """Publish a progress event; record the fraction on the job (at most every
        `progress_interval_s`, and never past an ending)."""
        if ref.job_id in self._ended:
            return  # a late step of a job this process has ended: its story is over
        await self.events.publish(event)
        now = time.monotonic()
        if now - self._progress_written.get(ref.job_id, float("-inf")) < self.progress_interval_s:
            return
        self._progress_written[ref.job_id] = now
        fraction = min(max(fraction, 0.0), 0.99)
        await self.jobs.update(ref.user_id, ref.job_id, lambda s: s if s.status is not JobStatus.RUNNING
                               else s.model_copy(update={"progress": fraction}))

    async def request_cancel(self, command: CancelJob) -> None:
        """A queued job is cancelled now; a running one is flagged for its worker, which
        checks the flag (`watch_for_cancel`) and stops within a step."""
        job = await self.jobs.get(command.user_id, command.job_id)
        if job is None or job.status.is_terminal:  # read under its owner's key: theirs
            return
        ref = JobRef(job.job_id, job.user_id, self.kind, command.correlation_id)
        _log_step(ref, "cancel requested", status=job.status.value)
        if job.status is JobStatus.QUEUED:
            await self.cancel(ref, "cancelled while queued")
            return
        await self.jobs.update(command.user_id, command.job_id, lambda s: s if s.status.is_terminal
                               else s.model_copy(update={"cancel_requested": True}))

    async def watch_for_cancel(self, ref: JobRef, cancel: threading.Event,
                               poll_s: float) -> None:
        """Set `cancel` once the job is flagged, or its account deleted (runs beside the
        work; cancel the task when the work ends). A broker fault only delays the next
        look."""
        while not cancel.is_set():
            await asyncio.sleep(poll_s)
            try:
                job = await self.jobs.get(ref.user_id, ref.job_id)
                stop = (job is not None and (job.cancel_requested or job.status.is_terminal)
                        or await self.account_gone(ref))
            except BROKER_ERRORS as exc:  # a missed look is retried at the next poll
                log.warning("cancel check failed", extra={"job_id": ref.job_id,
                                                          "error": str(exc)})
                continue
            if stop:
                cancel.set()

    async def account_gone(self, ref: JobRef) -> bool:
        """The job's account was deleted: store nothing more for it. A broker fault here
        propagates (the command is retried), it never lets a result through unchecked."""
        return (self.deleted_accounts is not None
                and await self.deleted_accounts.is_deleted(ref.user_id))

    # --- endings ---------------------------------------------------------------------------

    async def succeed(self, ref: JobRef, event: Event, result: dict[str, Any]) -> bool:
        """Record the success and announce it; False when the job had ended another way.
        A job with no record (a job of milliseconds) is recorded here, already ended."""
        event = _stamp(event, f"{ref.job_id}-completed", ref)
        return await self._end(ref, JobStatus.SUCCEEDED, event,
                               {"progress": 1.0, "result": result})

    async def fail(self, ref: JobRef, code: FailureCode, reason: str) -> bool:
        event = JobFailed(message_id=f"{ref.job_id}-failed", user_id=ref.user_id,
                          job_id=ref.job_id, kind=self.kind, code=code, reason=reason,
                          correlation_id=ref.correlation_id)
        return await self._end(ref, JobStatus.FAILED, event,
                               {"error": JobError(code=code, reason=reason), "detail": reason})

    async def cancel(self, ref: JobRef, detail: str) -> bool:
        job = await self.jobs.get(ref.user_id, ref.job_id)
        if job is None or job.status.is_terminal:
            return False
        event = _stamp(self.domain_events.cancelled(job), f"{ref.job_id}-cancelled", ref)
        return await self._end(ref, JobStatus.CANCELLED, event, {"detail": detail})

    async def requeue(self, ref: JobRef, reason: str, *,
                      resumed_from_step: int | None = None) -> JobState | None:
        """A started job waits for another attempt: back to queued, and said once (not
        for a deleted account: its job waits for nothing)."""
        if await self.account_gone(ref):
            return None
        job = await self.jobs.get(ref.user_id, ref.job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            return job
        attempt = max(job.attempts, 1)
        await self.events.publish(JobRequeued(
            message_id=f"{ref.job_id}-requeued-{attempt}", user_id=ref.user_id,
            job_id=ref.job_id, kind=self.kind, reason=reason, attempt=attempt,
            resumed_from_step=resumed_from_step, correlation_id=ref.correlation_id))
        try:
            job = await self.jobs.update(ref.user_id, ref.job_id, lambda s: s.model_copy(update={
                "status": JobStatus.QUEUED, "detail": reason}) if s.status is JobStatus.RUNNING
                else s)
        except InvalidTransition:
            return await self.jobs.get(ref.user_id, ref.job_id)
        if job is not None and job.status is JobStatus.QUEUED:  # not ended meanwhile
            _log_step(ref, "requeued", attempt=attempt, reason=reason)
        return job

    async def attempt(self, ref: JobRef, work: Callable[[], Awaitable[None]]) -> None:
        """Run one attempt of a job's work. A `JobFailure` fails the job for good (and its
        command is acked); any other error queues it again, said once, and is re-raised
        so the command is retried after a delay."""
        try:
            await work()
        except JobFailure as exc:
            await self.fail(ref, exc.code, exc.reason)
            raise PermanentFailure(exc.reason) from exc
        except PermanentFailure:
            raise
        except Exception:
            await self.requeue(ref, "An attempt failed; it will be retried shortly.")
            raise

    async def dead_letter(self, ref: JobRef) -> None:
        """Deliveries ran out: the job failed, and its owner hears why."""
        await self.fail(ref, FailureCode.DELIVERY_EXHAUSTED,
                        f"The {self.kind.value} failed several times; it has been stopped.")

    async def dead_letter_raw(self, body: bytes) -> None:
        """A command's deliveries ran out (the dead-letter watch hands over its body): its
        job fails, when the body names a valid job and user, even if it decodes no
        further."""
        if (ref := ref_from_raw(body, self.kind)) is None:
            log.error("unattributable command dropped after its deliveries ran out",
                      extra={"kind": self.kind.value})
            return
        await self.dead_letter(ref)

    # --- internals ---------------------------------------------------------------------------

    async def _create(self, ref: JobRef, result: dict[str, Any]) -> JobState:
        state = JobState(job_id=ref.job_id, user_id=ref.user_id, kind=self.kind, result=result)
        if await self.jobs.create(state):
            queued = self.domain_events.queued(state)
            if queued is not None:
                await self.events.publish(_stamp(queued, f"{ref.job_id}-queued", ref))
        return await self.jobs.get(ref.user_id, ref.job_id) or state

    async def _end(self, ref: JobRef, status: JobStatus, event: Event,
                   update: dict[str, Any]) -> bool:
        if await self.account_gone(ref):
            return False  # erased with its account: no record, no clean-up, no event

        def end(state: JobState) -> JobState:
            if state.status.is_terminal:
                raise _AlreadyEnded
            return state.model_copy(update={
                "status": status, "cancel_requested": False,
                "ending": event.model_dump(mode="json"), **update})

        try:
            job = await self.jobs.update(ref.user_id, ref.job_id, end)
        except (_AlreadyEnded, InvalidTransition):
            return False  # it ended another way first: not an error
        except KeyError:  # never recorded (a job of milliseconds): recorded ended
            job = end(JobState(job_id=ref.job_id, user_id=ref.user_id, kind=self.kind))
            if not await self.jobs.create(job):
                return await self._end(ref, status, event, update)
        self._progress_written.pop(ref.job_id, None)
        _remember(self._ended, ref.job_id, None)
        since = self._arrived.pop(ref.job_id, None) or job.created_at
        _log_step(ref, "ended", outcome=status.value,
                  duration_s=round((utcnow() - since).total_seconds(), 3),
                  **({"code": job.error.code.value} if job.error is not None else {}))
        # The domain's clean-up before the event: a client that hears of the ending finds
        # its effects (a ready model, a free slot). A crash in between is mended by the
        # redelivery, which meets the ended job and runs both again.
        if self.on_end is not None:
            await self.on_end(job)
        await self.events.publish(event)
        return True

    async def _announce_ending_again(self, job: JobState) -> None:
        if self.on_end is not None:
            await self.on_end(job)
        if job.ending:
            model = EVENTS.get(job.ending.get("type", ""))
            if model is not None:
                await self.events.publish(model.model_validate(job.ending))


async def erase_twice(erase: Callable[[], Awaitable[None]], event: Event, delivery: int,
                      second_pass_s: float, *,
                      now: Callable[[], datetime] = utcnow) -> None:
    """Erase a deleted account's data now, and once more when the deletion is
    `second_pass_s` old (the account-deleted event comes back): a job already running when
    the account went may store its result after the first pass, never after the second.

    Timed from the deletion, not from this delivery: a first pass that failed and is
    retried still gets its later pass, and the last pass is the first one made that late
    (a clock ahead of auth_service's still waits once). The passes are at least a quarter
    of `second_pass_s` apart, time for a store already under way to finish."""
    await erase()
    age = (now() - event.occurred_at).total_seconds()
    if delivery == 1 or age < second_pass_s:
        raise AgainLater(min(second_pass_s, max(second_pass_s / 4, second_pass_s - age)))


def erasing(erase: Callable[[str], Awaitable[Any]], second_pass_s: float) -> Handle:
    """The account-cleanup consumer's handler: `erase(user_id)` of each deleted account,
    now and once more (`erase_twice`)."""
    async def erase_both(event: AccountDeleted, msg: Msg) -> None:
        await erase_twice(lambda: erase(event.user_id), event, msg.metadata.num_delivered,
                          second_pass_s)

    return handling(AccountDeleted, erase_both, with_message=True)


def ref_from_raw(body: bytes, kind: JobKind) -> JobRef | None:
    """Whose job a command too broken to decode was about, when it names a valid job id
    and user id (no subject or key is ever built from anything else)."""
    try:
        raw = json.loads(body)
        job_id, user_id = _ID.validate_python(raw["job_id"]), _ID.validate_python(raw["user_id"])
    except (ValueError, KeyError, TypeError):  # ValidationError is a ValueError
        return None
    correlation_id = raw.get("correlation_id")
    if not isinstance(correlation_id, str) or not 0 < len(correlation_id) <= 128:
        correlation_id = job_id
    return JobRef(job_id, user_id, kind, correlation_id)


def fields_of(error: ValidationError) -> str:
    """The fields a validation error names, for a reason a person can read."""
    return ", ".join(".".join(map(str, e["loc"])) or "body" for e in error.errors())


def _remember(recent: OrderedDict[str, Any], job_id: str, value: Any) -> None:
    """Keep the first value for a job, and only the most recent jobs."""
    recent.setdefault(job_id, value)
    while len(recent) > _RECENT:
        recent.popitem(last=False)


def _log_step(ref: JobRef, step: str, **details: Any) -> None:
    """One line of a job's life: its ids and details as fields (both log formats show
    them); details are ids, counts and our own words, never what a user wrote."""
    log.info("%s job %s", ref.kind.value, step,
             extra={"job_id": ref.job_id, "kind": ref.kind.value,
                    "correlation_id": ref.correlation_id, "step": step, **details})


def _stamp(event: Event, message_id: str, ref: JobRef) -> Event:
    """The lifecycle names its events (ids derived from the job: a repeat is a duplicate)
    and ties them to the request that caused them."""
    return event.model_copy(update={"message_id": message_id,
                                    "correlation_id": ref.correlation_id})
