"""Per-user caps on queued-and-running jobs: one KV key per user holding their live job
ids, changed with revision checks so concurrent requests cannot exceed the cap."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.ids import checked_id
from contracts.topology import QUEUE_SLOTS_KV
from terra.errors import TerraError

_ATTEMPTS = 30


class QueueSlots:
    def __init__(self, kv: KeyValue, kind: str) -> None:
        self._kv = kv
        self._kind = kind

    @classmethod
    async def open(cls, js: JetStreamContext, kind: str) -> QueueSlots:
        return cls(await js.key_value(QUEUE_SLOTS_KV.bucket), kind)

    async def claim(
        self, user_id: str, job_id: str, cap: int,
        still_live: Callable[[str], Awaitable[bool]],
    ) -> bool:
        """Add `job_id` to the user's live jobs unless they hold `cap` already. Jobs that
        ended without releasing their slot (a crash) are pruned on the way."""
        for _ in range(_ATTEMPTS):
            jobs, revision = await self._read(user_id)
            live = [job for job in jobs if job == job_id or await still_live(job)]
            if job_id in live:
                return True
            if len(live) >= cap:
                return False
            if await self._write(user_id, [*live, job_id], revision):
                return True
        raise TerraError(f"queue slots of {user_id} kept changing")

    async def release(self, user_id: str, job_id: str) -> None:
        for _ in range(_ATTEMPTS):
            jobs, revision = await self._read(user_id)
            if job_id not in jobs:
                return
            if await self._write(user_id, [j for j in jobs if j != job_id], revision):
                return
        raise TerraError(f"queue slots of {user_id} kept changing")

    async def forget(self, user_id: str) -> None:
        """A deleted account's slots: gone (the bucket keeps one message per key, so the
        delete marker replaces the value)."""
        await self._kv.delete(self._key(user_id))

    async def held(self, user_id: str) -> list[str]:
        return (await self._read(user_id))[0]

    def _key(self, user_id: str) -> str:
        return f"{self._kind}.{checked_id(user_id, 'user id')}"

    async def _read(self, user_id: str) -> tuple[list[str], int | None]:
        try:
            entry = await self._kv.get(self._key(user_id))
        except KeyNotFoundError:
            return [], None
        return (json.loads(entry.value) if entry.value else []), entry.revision

    async def _write(self, user_id: str, jobs: list[str], revision: int | None) -> bool:
        data = json.dumps(jobs).encode()
        try:
            if revision is None:
                await self._kv.create(self._key(user_id), data)
            else:
                await self._kv.update(self._key(user_id), data, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True
