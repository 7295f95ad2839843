"""Job state in the jobs KV buckets, one per job kind, under `<user_id>.<job_id>`, written by
the service that owns the job: each bucket an `OwnedRecords` of `JobState`.

Every write is revision-checked (no lost updates) and every status change must follow
`JOB_TRANSITIONS`, so a redelivered command or a stale worker can never move a finished
job backwards. Writes that keep the status (progress, a result annotation) are allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts.base import utcnow
from contracts.jobs import JOB_TRANSITIONS, JobKind, JobState
from contracts.topology import JOBS_KVS
from terra.errors import TerraError
from terra.records.store import OwnedRecords


class InvalidTransition(TerraError):
    """The job is in a state from which this change is not allowed."""


class JobRecords(OwnedRecords[JobState]):
    """The jobs of one kind, in that kind's bucket."""

    record_type = JobState
    id_field = "job_id"


class JobStore:
    """The jobs of the kinds this process may see: a service opens its own kind's bucket,
    the gateway every kind's (it reads any job by id, and records the ones it admits)."""

    def __init__(self, kvs: dict[JobKind, KeyValue], *,
                 list_timeout_s: float | None = None) -> None:
        # Bounded listings (`OwnedRecords`): a stream that stops answering mid-way is a
        # TimeoutError (a 503 at the gateway), not a request that hangs.
        self._records = {kind: JobRecords(kv, list_timeout_s=list_timeout_s)
                         for kind, kv in kvs.items()}

    @classmethod
    async def open(cls, js: JetStreamContext, kinds: Iterable[JobKind] = tuple(JobKind), *,
                   list_timeout_s: float | None = None) -> JobStore:
        kinds = tuple(kinds)
        buckets = await asyncio.gather(*(js.key_value(JOBS_KVS[kind.value].bucket)
                                         for kind in kinds))
        return cls(dict(zip(kinds, buckets, strict=True)), list_timeout_s=list_timeout_s)

    @property
    def kinds(self) -> tuple[JobKind, ...]:
        """The kinds of job this store keeps."""
        return tuple(self._records)

    def _of(self, kind: JobKind) -> JobRecords:
        try:
            return self._records[kind]
        except KeyError:
            raise TerraError(f"this process keeps no {kind.value} jobs") from None

    async def get(self, user_id: str, job_id: str,
                  kind: JobKind | None = None) -> JobState | None:
        """The job if `user_id` owns it (another's job id finds nothing); with `kind`, only
        a job of that kind, read from its bucket alone."""
        if kind is not None:
            return await self._of(kind).get(user_id, job_id)
        found = await self._find(user_id, job_id)
        return found[1] if found else None

    async def create(self, state: JobState) -> bool:
        """Record a new job; False when the job id already exists (a redelivery)."""
        return await self._of(state.kind).create(state)

    async def update(self, user_id: str, job_id: str,
                     change: Callable[[JobState], JobState]) -> JobState:
        """Apply `change` to the current state with a revision check, retrying on races."""
        found = await self._find(user_id, job_id)
        if found is None:
            raise KeyError(job_id)

        def checked(current: JobState) -> JobState | None:
            updated = change(current)
            if updated == current:
                return None  # nothing to write
            moves = updated.status is not current.status
            if moves and updated.status not in JOB_TRANSITIONS[current.status]:
                raise InvalidTransition(
                    f"job {job_id}: {current.status.value} -> {updated.status.value}"
                )
            return updated.model_copy(update={"updated_at": utcnow()})

        return await found[0].update(user_id, job_id, checked)

    async def of_user(self, user_id: str, kind: JobKind) -> list[JobState]:
        """Every job of one user of one kind, read with one server-side filter."""
        return await self._of(kind).list(user_id)

    async def of_user_kinds(self, user_id: str,
                            kinds: Iterable[JobKind] | None = None) -> list[JobState]:
        """Every job of one user of these kinds (None: every kind kept here), each bucket
        read at once, newest first (by creation, then job id: the same order at every
        read)."""
        chosen = tuple(dict.fromkeys(self.kinds if kinds is None else kinds))
        listed = await asyncio.gather(*(self._of(kind).list(user_id) for kind in chosen))
        jobs = [job for of_kind in listed for job in of_kind]
        return sorted(jobs, key=lambda job: (job.created_at, job.job_id), reverse=True)

    async def erase(self, user_id: str, kind: JobKind) -> int:
        """A deleted account's jobs of one kind (its service erases its own), by key: one
        that no longer parses goes too."""
        return len(await self._of(kind).erase(user_id))

    async def _find(self, user_id: str, job_id: str) -> tuple[JobRecords, JobState] | None:
        """Where the job is kept, and its state: a job id names one job, whichever bucket
        holds it."""
        records = list(self._records.values())
        found = await asyncio.gather(*(r.get(user_id, job_id) for r in records))
        for kept_in, state in zip(records, found, strict=True):
            if state is not None:
                return kept_in, state
        return None
