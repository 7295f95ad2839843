"""Job state in KV: create once, revision-checked updates, no moving backwards."""

from __future__ import annotations

import asyncio

import pytest

from contracts.ids import new_id
from contracts.jobs import JobKind, JobState, JobStatus
from terra.jobs.store import InvalidTransition, JobStore
from terra.nats.provisioning import provision

pytestmark = pytest.mark.integration


@pytest.fixture
async def jobs(nc) -> JobStore:
    await provision(nc)
    return await JobStore.open(nc.jetstream())


def queued() -> JobState:
    return JobState(job_id=new_id(), user_id="u1", kind=JobKind.GENERATION)


async def test_a_job_is_created_once_and_only_its_owner_finds_it(jobs):
    job = queued()
    assert await jobs.create(job)
    assert not await jobs.create(job.model_copy(update={"detail": "a redelivery"}))
    # Keyed by owner: another user naming the same id neither sees nor touches it.
    assert await jobs.get("intruder", job.job_id) is None
    assert await jobs.create(job.model_copy(update={"user_id": "intruder"}))
    assert (await jobs.get(job.user_id, job.job_id)).detail is None
    assert [j.job_id for j in await jobs.of_user("u1", job.kind) if j.job_id == job.job_id] == [job.job_id]


async def test_concurrent_progress_updates_lose_nothing(jobs):
    job = queued()
    await jobs.create(job)
    await jobs.update(job.user_id, job.job_id, lambda s: s.model_copy(update={"status": JobStatus.RUNNING}))

    def add_step(state: JobState) -> JobState:
        return state.model_copy(update={"result": {"steps": state.result.get("steps", 0) + 1}})

    await asyncio.gather(*(jobs.update(job.user_id, job.job_id, add_step) for _ in range(10)))
    assert (await jobs.get(job.user_id, job.job_id)).result == {"steps": 10}


async def test_a_finished_job_never_moves_backwards(jobs):
    job = queued()
    await jobs.create(job)
    for status in (JobStatus.RUNNING, JobStatus.SUCCEEDED):
        await jobs.update(job.user_id, job.job_id, lambda s, st=status: s.model_copy(update={"status": st}))
    with pytest.raises(InvalidTransition):
        await jobs.update(job.user_id, job.job_id, lambda s: s.model_copy(update={"status": JobStatus.RUNNING}))
    with pytest.raises(InvalidTransition):
        await jobs.update(job.user_id, job.job_id, lambda s: s.model_copy(update={"status": JobStatus.FAILED}))
    # Annotating a finished job keeps its status, so it is allowed.
    done = await jobs.update(job.user_id, job.job_id, lambda s: s.model_copy(update={"result": {"note": 1}}))
    assert done.status is JobStatus.SUCCEEDED and done.result == {"note": 1}
