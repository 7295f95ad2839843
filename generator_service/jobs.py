"""The generation domain's job vocabulary: its events, and a command's job reference."""

from __future__ import annotations

from contracts.base import Event
from contracts.generation import (
    GenerateImage,
    GenerationCancelled,
    GenerationQueued,
    GenerationStarted,
)
from contracts.jobs import JobKind, JobState
from terra.jobs.lifecycle import JobRef


class GenerationEvents:
    """The generation domain's own events about a job (see `terra.jobs.lifecycle.JobEvents`)."""

    def queued(self, job: JobState) -> Event | None:
        return GenerationQueued(user_id=job.user_id, job_id=job.job_id, position=0)

    def started(self, job: JobState) -> Event | None:
        return GenerationStarted(user_id=job.user_id, job_id=job.job_id)

    def cancelled(self, job: JobState) -> Event:
        return GenerationCancelled(user_id=job.user_id, job_id=job.job_id)


def ref_of(command: GenerateImage) -> JobRef:
    return JobRef.of(command, JobKind.GENERATION)
