"""Job state in the jobs KV bucket under `<user_id>.<job_id>`, written by the service that
owns the job.

Every write is revision-checked (no lost updates) and every status change must follow
`JOB_TRANSITIONS`, so a redelivered command or a stale worker can never move a finished
job backwards. Writes that keep the status (progress, a result annotation) are allowed.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.base import checked_id, utcnow
from contracts.jobs import JOB_TRANSITIONS, JobKind, JobState
from contracts.topology import JOBS_KV, job_key
from terra.errors import TerraError
from terra.kvscan import live_entries

_MAX_ATTEMPTS = 20


class InvalidTransition(TerraError):
    """The job is in a state from which this change is not allowed."""


class JobStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> JobStore:
        return cls(await js.key_value(JOBS_KV.bucket))

    async def get(self, user_id: str, job_id: str) -> JobState | None:
        """The job if `user_id` owns it (another's job id finds nothing)."""
        found = await self._get(job_key(user_id, job_id))
        return found[0] if found else None

    async def create(self, state: JobState) -> bool:
        """Record a new job; False when the job id already exists (a redelivery)."""
        try:
            await self._kv.create(job_key(state.user_id, state.job_id),
                                  state.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(self, user_id: str, job_id: str,
                     change: Callable[[JobState], JobState]) -> JobState:
        """Apply `change` to the current state with a revision check, retrying on races."""
        key = job_key(user_id, job_id)
        for _ in range(_MAX_ATTEMPTS):
            found = await self._get(key)
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
                await self._kv.update(key, updated.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise TerraError(f"job {job_id} kept changing under us")

    async def of_user(self, user_id: str, kind: JobKind | None = None) -> list[JobState]:
        """Every job of one user (of one kind), read with one server-side filter."""
        entries = await live_entries(self._kv, f"{checked_id(user_id, 'user id')}.*")
        jobs = [JobState.model_validate_json(entry.value) for entry in entries.values()
                if entry.value]
        return [job for job in jobs if kind is None or job.kind is kind]

    async def erase(self, user_id: str, kind: JobKind) -> int:
        """A deleted account's jobs of one kind (its service erases its own)."""
        jobs = await self.of_user(user_id, kind)
        for job in jobs:
            await self._kv.purge(job_key(user_id, job.job_id))
        return len(jobs)

    async def _get(self, key: str) -> tuple[JobState, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return JobState.model_validate_json(entry.value), entry.revision
