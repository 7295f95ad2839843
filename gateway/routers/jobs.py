from __future__ import annotations

from fastapi import APIRouter
from nats.js.errors import KeyNotFoundError

from contracts.base import Id
from contracts.jobs import JobState
from gateway.deps import CurrentUser, Runtime
from gateway.problems import Problem

router = APIRouter(prefix="/api", tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobState)
async def get_job(job_id: Id, caller: CurrentUser, runtime: Runtime) -> JobState:
    """A job's state, to its owner only: another user's job is indistinguishable from none."""
    try:
        entry = await runtime.jobs.get(job_id)
    except KeyNotFoundError:
        entry = None
    job = JobState.model_validate_json(entry.value) if entry and entry.value else None
    if job is None or job.user_id != caller.user_id:
        raise Problem(404, "not-found", f"No job {job_id}.")
    return job
