"""Job state in the jobs KV bucket, written by the service that owns the job.

Every write is revision-checked (no lost updates) and every status change must follow
`JOB_TRANSITIONS`, so a redelivered command or a stale worker can never move a finished
job backwards. Writes that keep the status (progress, a result annotation) are allowed.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.base import utcnow
from contracts.jobs import JOB_TRANSITIONS, JobState
from contracts.topology import JOBS_KV
from terra.errors import TerraError

_MAX_ATTEMPTS = 20


class InvalidTransition(TerraError):
    """The job is in a state from which this change is not allowed."""


class JobStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> JobStore:
        return cls(await js.key_value(JOBS_KV.bucket))

    async def get(self, job_id: str) -> JobState | None:
        found = await self._get(job_id)
        return found[0] if found else None

    async def create(self, state: JobState) -> bool:
        """Record a new job; False when the job id already exists (a redelivery)."""
        try:
            await self._kv.create(state.job_id, state.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(self, job_id: str, change: Callable[[JobState], JobState]) -> JobState:
        """Apply `change` to the current state with a revision check, retrying on races."""
        for _ in range(_MAX_ATTEMPTS):
            found = await self._get(job_id)
            if found is None:
                raise KeyError(job_id)
            current, revision = found
            updated = change(current)
            if updated == current:
                return current
            moves = updated.status is not current.status
            if moves and updated.status not in JOB_TRANSITIONS[current.status]:
                raise InvalidTransition(
                    f"job {job_id}: {current.status.value} -> {updated.status.value}"
                )
            updated = updated.model_copy(update={"updated_at": utcnow()})
            try:
                await self._kv.update(job_id, updated.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise TerraError(f"job {job_id} kept changing under us")

    async def _get(self, job_id: str) -> tuple[JobState, int] | None:
        try:
            entry = await self._kv.get(job_id)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return JobState.model_validate_json(entry.value), entry.revision
