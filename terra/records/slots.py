"""Per-user slots: one KV key per user naming the jobs that hold that user's slots, changed
only through `update_entry`, so concurrent claims never exceed the cap. A holder whose job
ended without releasing its slot (a crash, a lost release) is dropped by the next claim
that asks `still_live`.

Two layouts, one mechanism: the generation queue's JSON list of job ids (`JOB_LIST`), and
the training slot's one job id as plain text, no key at all while it is free (`ONE_JOB`:
what the gateway's tests write and read, and what a records sweep of its bucket skips)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from terra.records.store import Updated, update_entry

StillLive = Callable[[str], Awaitable[bool]]
Change = Callable[[list[str] | None], list[str] | None | Awaitable[list[str] | None]]


@dataclass(frozen=True)
class SlotLayout:
    """How a key holds its jobs: `encode` returning None means no key."""

    decode: Callable[[bytes], list[str]]
    encode: Callable[[list[str]], bytes | None]


def _one_job(jobs: list[str]) -> bytes | None:
    if len(jobs) > 1:
        raise ValueError(f"a one-job slot claimed with a cap over 1: {jobs}")
    return jobs[0].encode() if jobs else None


JOB_LIST = SlotLayout(decode=json.loads, encode=lambda jobs: json.dumps(jobs).encode())
ONE_JOB = SlotLayout(decode=lambda value: [value.decode()], encode=_one_job)


class Slots:
    def __init__(self, kv: KeyValue, key: Callable[[str], str],
                 layout: SlotLayout = JOB_LIST) -> None:
        self._kv = kv
        self._key = key  # the user's key
        self._layout = layout

    async def claim(self, user_id: str, job_id: str, cap: int,
                    still_live: StillLive | None = None) -> bool:
        """Take a slot for `job_id` unless the user's jobs hold `cap` already. True when
        it is ours: taken now, or held by this same job already (a retried request).
        Holders that `still_live` says have ended are dropped on the way; without it,
        every holder counts."""

        async def taken(current: list[str] | None) -> list[str] | None:
            holders = current or []
            if job_id in holders:
                return None
            live = [job for job in holders if still_live is None or await still_live(job)]
            return [*live, job_id] if len(live) < cap else None

        seen, written = await self._update(user_id, taken)
        return written is not None or job_id in (seen or [])

    async def release(self, user_id: str, job_id: str) -> None:
        """Free the job's slot, if it still holds one."""

        def without(current: list[str] | None) -> list[str] | None:
            holders = current or []
            return [job for job in holders if job != job_id] if job_id in holders else None

        await self._update(user_id, without)

    async def forget(self, user_id: str) -> None:
        """A deleted account's slots, whoever holds them: gone (the bucket keeps one message
        per key, so the delete marker replaces the value)."""
        await self._kv.delete(self._key(user_id))

    async def held(self, user_id: str) -> list[str]:
        try:
            entry = await self._kv.get(self._key(user_id))
        except KeyNotFoundError:
            return []
        return self._layout.decode(entry.value) if entry.value else []

    async def _update(self, user_id: str, change: Change) -> Updated[list[str]]:
        return await update_entry(self._kv, self._key(user_id), change,
                                  decode=self._layout.decode, encode=self._layout.encode)
