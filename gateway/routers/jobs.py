from __future__ import annotations

from fastapi import APIRouter

from contracts.ids import Id
from contracts.jobs import JobState
from gateway.deps import CurrentUser, Jobs
from gateway.problems import Problem

router = APIRouter(prefix="/api", tags=["jobs"])


# `ending` is the lifecycle's copy of the ending event, for re-announcing it: internal.
@router.get("/jobs/{job_id}", response_model=JobState, response_model_exclude={"ending"})
async def get_job(job_id: Id, caller: CurrentUser, jobs: Jobs) -> JobState:
    """A job's state (status, progress, result or error), to its owner only: another
    user's job is indistinguishable from none."""
    job = await jobs.get(caller.user_id, job_id)
    if job is None:
        raise Problem(404, "not-found", f"No job {job_id}.")
    return job
