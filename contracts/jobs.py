"""Job state shared by every long-running domain, and the events about any job."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, Field

from contracts.base import Command, Event, Model, utcnow
from contracts.ids import Id


class JobKind(StrEnum):
    PROMPT = "prompt"
    TRAINING = "training"
    GENERATION = "generation"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


# The only transitions a job may take; anything else is a bug or a stale writer.
# A running job goes back to queued when its worker stopped or its attempt failed and it
# waits for another attempt (a `job.requeued.v1` event says why). A job of milliseconds
# (a prompt) may succeed with no recorded start.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED,
         JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class FailureCode(StrEnum):
    """Machine-readable reasons a job failed; `JobFailed.reason` is the human text."""

    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    OUT_OF_MEMORY = "out_of_memory"
    MODEL_UNAVAILABLE = "model_unavailable"
    STORAGE_ERROR = "storage_error"
    TIMEOUT = "timeout"
    DELIVERY_EXHAUSTED = "delivery_exhausted"
    INTERNAL = "internal"


class JobError(Model):
    code: FailureCode
    reason: str = Field(max_length=2000)


class JobState(Model):
    """The value stored under the job id in the jobs KV bucket, written by the job's owner."""

    type: Literal["job.state.v1"] = "job.state.v1"
    job_id: Id
    user_id: Id
    kind: JobKind
    status: JobStatus = JobStatus.QUEUED
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    detail: str | None = Field(default=None, max_length=500)
    result: dict[str, Any] = Field(default_factory=dict)
    error: JobError | None = None
    cancel_requested: bool = False
    attempts: int = Field(default=0, ge=0, description="Attempts that started work.")
    started_at: AwareDatetime | None = Field(
        default=None, description="When work first started (the one `started` event).")
    ending: dict[str, Any] | None = Field(
        default=None, description="The ending event as published, sent again (same "
        "message id, so never twice) when a redelivery meets a finished job.")
    created_at: AwareDatetime = Field(default_factory=utcnow)
    updated_at: AwareDatetime = Field(default_factory=utcnow)


class CancelJob(Command):
    """Ask the owning service to cancel a queued or running job."""

    domain: ClassVar[str] = "jobs"
    verb: ClassVar[str] = "cancel"
    type: Literal["job.cancel.v1"] = "job.cancel.v1"
    job_id: Id
    user_id: Id
    kind: JobKind

    def subject(self) -> str:
        from contracts.topology import command_subject

        return command_subject(self.kind.value, self.verb)


class JobFailed(Event):
    """Any job that ended in failure; published on its kind's domain."""

    domain: ClassVar[str] = "jobs"
    name: ClassVar[str] = "failed"
    type: Literal["job.failed.v1"] = "job.failed.v1"
    job_id: Id
    kind: JobKind
    code: FailureCode
    reason: str = Field(max_length=2000, description="Text a user can read.")
    retryable: bool = False

    def subject(self) -> str:
        from contracts.topology import event_subject

        return event_subject(self.kind.value, self.name, self.user_id)


class JobRequeued(Event):
    """A job that had started waits for another attempt: its worker stopped, or the attempt
    failed in a way worth retrying. Published once per attempt, on its kind's domain."""

    domain: ClassVar[str] = "jobs"
    name: ClassVar[str] = "requeued"
    type: Literal["job.requeued.v1"] = "job.requeued.v1"
    job_id: Id
    kind: JobKind
    reason: str = Field(max_length=2000, description="Text a user can read.")
    attempt: int = Field(ge=1, description="The attempt that ended without an ending.")
    resumed_from_step: int | None = Field(
        default=None, ge=0, description="Progress kept for the next attempt (training "
        "checkpoints), when there is any.")

    def subject(self) -> str:
        from contracts.topology import event_subject

        return event_subject(self.kind.value, self.name, self.user_id)
