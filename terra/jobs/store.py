"""Job state in the jobs KV buckets, one per job kind, under `<user_id>.<job_id>`, written by
the service that owns the job.

Every write is revision-checked (no lost updates) and every status change must follow
`JOB_TRANSITIONS`, so a redelivered command or a stale worker can never move a finished
job backwards. Writes that keep the status (progress, a result annotation) are allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.base import utcnow
from contracts.ids import checked_id
from contracts.jobs import JOB_TRANSITIONS, JobKind, JobState
from contracts.topology import JOBS_KVS, job_key
from terra.errors import TerraError
from terra.nats.listings import live_entries

_MAX_ATTEMPTS = 20


class InvalidTransition(TerraError):
    """The job is in a state from which this change is not allowed."""


class JobStore:
    """The jobs of the kinds this process may see: a service opens its own kind's bucket,
    the gateway every kind's (it reads any job by id, and records the ones it admits)."""

    def __init__(self, kvs: dict[JobKind, KeyValue]) -> None:
        self._kvs = kvs

    @classmethod
    async def open(cls, js: JetStreamContext, kinds: Iterable[JobKind] = tuple(JobKind)) -> JobStore:
        kinds = tuple(kinds)
        buckets = await asyncio.gather(*(js.key_value(JOBS_KVS[kind.value].bucket)
                                         for kind in kinds))
        return cls(dict(zip(kinds, buckets, strict=True)))

    def _kv(self, kind: JobKind) -> KeyValue:
        try:
            return self._kvs[kind]
        except KeyError:
            raise TerraError(f"this process keeps no {kind.value} jobs") from None

    async def get(self, user_id: str, job_id: str,
                  kind: JobKind | None = None) -> JobState | None:
        """The job if `user_id` owns it (another's job id finds nothing); with `kind`, only
        a job of that kind, read from its bucket alone."""
        key = job_key(user_id, job_id)
        if kind is not None:
            found = await self._get(self._kv(kind), key)
            return found[0] if found else None
        found = await self._find(key)
        return found[1][0] if found else None

    async def create(self, state: JobState) -> bool:
        """Record a new job; False when the job id already exists (a redelivery)."""
        try:
            await self._kv(state.kind).create(job_key(state.user_id, state.job_id),
                                              state.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(self, user_id: str, job_id: str,
                     change: Callable[[JobState], JobState]) -> JobState:
        """Apply `change` to the current state with a revision check, retrying on races."""
        key = job_key(user_id, job_id)
        for _ in range(_MAX_ATTEMPTS):
            found = await self._find(key)
            if found is None:
                raise KeyError(job_id)
            kv, (current, revision) = found
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
                await kv.update(key, updated.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise TerraError(f"job {job_id} kept changing under us")

    async def of_user(self, user_id: str, kind: JobKind) -> list[JobState]:
        """Every job of one user of one kind, read with one server-side filter."""
        entries = await live_entries(self._kv(kind), f"{checked_id(user_id, 'user id')}.*")
        return [JobState.model_validate_json(entry.value) for entry in entries.values()
                if entry.value]

    async def erase(self, user_id: str, kind: JobKind) -> int:
        """A deleted account's jobs of one kind (its service erases its own), by key: one
        that no longer parses goes too."""
        kv = self._kv(kind)
        keys = await live_entries(kv, f"{checked_id(user_id, 'user id')}.*")
        for key in keys:
            await kv.delete(key)  # one message per key (`KvSpec.rollups`): nothing stays
        return len(keys)

    async def _find(self, key: str) -> tuple[KeyValue, tuple[JobState, int]] | None:
        """Where the job is kept, and its state and revision: a job id names one job,
        whichever bucket holds it."""
        found = await asyncio.gather(*(self._get(kv, key) for kv in self._kvs.values()))
        for kv, state in zip(self._kvs.values(), found, strict=True):
            if state is not None:
                return kv, state
        return None

    @staticmethod
    async def _get(kv: KeyValue, key: str) -> tuple[JobState, int] | None:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return JobState.model_validate_json(entry.value), entry.revision
