"""Jobs of any kind: one by id, or the caller's jobs a page at a time (filtered by kind and
status, so a reopened app finds what is still queued or running)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from contracts.ids import Id
from contracts.jobs import JobError, JobKind, JobState, JobStatus
from gateway.deps import CurrentUser, Jobs
from gateway.listing import Page, Paging, Position, Scope, filters
from gateway.problems import Problem

router = APIRouter(prefix="/api", tags=["jobs"])
# The caller's collections live under /api/me/: no user id in the path to get wrong.
mine = APIRouter(prefix="/api/me", tags=["jobs"])


# `ending` is the lifecycle's copy of the ending event, for re-announcing it: internal.
@router.get("/jobs/{job_id}", response_model=JobState, response_model_exclude={"ending"})
async def get_job(job_id: Id, caller: CurrentUser, jobs: Jobs) -> JobState:
    """A job's state (status, progress, result or error), to its owner only: another
    user's job is indistinguishable from none."""
    job = await jobs.get(caller.user_id, job_id)
    if job is None:
        raise Problem(404, "not-found", f"No job {job_id}.")
    return job


class JobItem(BaseModel):
    job_id: str = Field(description="The job's id (`GET /api/jobs/{job_id}` reads it).",
                        examples=["7699b6c1e4a84f0c9a2d8c1f0b3e5a77"])
    kind: JobKind = Field(description="What the job does.", examples=["generation"])
    status: JobStatus = Field(description="queued and running are still going; the others "
                              "are endings.", examples=["running"])
    progress: float = Field(ge=0.0, le=1.0, description="From 0 to 1.", examples=[0.4])
    detail: str | None = Field(description="A short account of where it is or how it "
                               "ended.", examples=["cancelled while queued"])
    result: dict[str, Any] = Field(description="What it produced (its kind's fields: a "
                                   "prompt's text, a training's `model_id`, …); empty "
                                   "until it ends.")
    error: JobError | None = Field(
        description="Why it failed (`code`, `reason`); null unless it failed.",
        examples=[{"code": "out_of_memory", "reason": "The GPU ran out of memory; try a "
                   "smaller size."}])
    cancel_requested: bool = Field(description="A cancel was asked and has not ended it "
                                   "yet.")
    created_at: datetime = Field(description="When it was accepted.")
    started_at: datetime | None = Field(description="When work first started; null while "
                                        "it has not.")
    updated_at: datetime = Field(description="Its record's last change.")

    @classmethod
    def of(cls, job: JobState) -> JobItem:
        return cls(job_id=job.job_id, kind=job.kind, status=job.status,
                   progress=job.progress, detail=job.detail, result=job.result,
                   error=job.error, cancel_requested=job.cancel_requested,
                   created_at=job.created_at, started_at=job.started_at,
                   updated_at=job.updated_at)


class JobPage(Page[JobItem]):
    """A page of the caller's jobs, newest first."""


@mine.get("/jobs", response_model=JobPage)
async def list_my_jobs(
    caller: CurrentUser, jobs: Jobs, paging: Paging,
    kind: Annotated[list[JobKind], Query(
        default_factory=list,
        description="Only these kinds (repeat it for several); all kinds when left out.")],
    status: Annotated[list[JobStatus], Query(
        default_factory=list,
        description="Only jobs in these states (repeat it for several): "
        "`status=queued&status=running` finds what is still going.")],
) -> JobPage:
    """Your jobs of every kind (prompt optimisations, trainings, generations), newest
    first, a page at a time. Jobs are kept 30 days."""
    found = await jobs.of_user_kinds(caller.user_id, kind or None)
    if status:
        found = [job for job in found if job.status in status]
    scope = Scope("jobs", caller.user_id, filters(kind=kind, status=status))
    shown, next_cursor = paging.page(
        found, lambda job: Position(job.created_at, job.job_id), scope)
    return JobPage(items=[JobItem.of(job) for job in shown], next_cursor=next_cursor)
