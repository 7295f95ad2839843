"""The generation domain's job vocabulary: its events, what every ending leaves, and a
command's job reference."""

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
from terra.jobs.slots import QueueSlots


class GenerationEvents:
    """The generation domain's own events about a job (see `terra.jobs.lifecycle.JobEvents`)."""

    def queued(self, job: JobState) -> Event | None:
        return GenerationQueued(user_id=job.user_id, job_id=job.job_id, position=0)

    def started(self, job: JobState) -> Event | None:
        return GenerationStarted(user_id=job.user_id, job_id=job.job_id)

    def cancelled(self, job: JobState) -> Event:
        return GenerationCancelled(user_id=job.user_id, job_id=job.job_id)


class GenerationCleanUp:
    """What every ending of a generation leaves (the lifecycle's `on_end`, run again when a
    redelivery meets the ended job): its place under the user's cap is free."""

    def __init__(self, slots: QueueSlots) -> None:
        self.slots = slots

    async def __call__(self, job: JobState) -> None:
        await self.slots.release(job.user_id, job.job_id)


def ref_of(command: GenerateImage) -> JobRef:
    return JobRef.of(command, JobKind.GENERATION)
