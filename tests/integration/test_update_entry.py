"""`terra.records.store.update_entry` on a real nats-server: concurrent writers lose no
update, and a revision-checked delete that lost its race (which nats-py reports as a bare
APIError, not KeyWrongLastSequenceError) is read again, not raised."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js import api

from terra.records.slots import ONE_JOB, Slots
from terra.records.store import update_entry

pytestmark = pytest.mark.integration


async def scratch_bucket(nc):
    return await nc.jetstream().create_key_value(api.KeyValueConfig(
        bucket=f"update_entry_{time.monotonic_ns()}", history=1))


async def test_two_concurrent_updaters_lose_no_increment(nc):
    kv = await scratch_bucket(nc)

    async def add_fifty() -> None:
        for _ in range(50):
            await update_entry(kv, "counter", lambda n: (n or 0) + 1,
                               decode=int, encode=lambda n: str(n).encode())

    await asyncio.gather(add_fifty(), add_fifty())
    assert (await kv.get("counter")).value == b"100"


class TakenOverFirst:
    """The bucket, where another claim takes the slot over just before our first delete."""

    def __init__(self, kv, holder: bytes) -> None:
        self._kv, self._holder = kv, holder

    def __getattr__(self, name: str):
        return getattr(self._kv, name)

    async def delete(self, key: str, last: int | None = None) -> bool:
        if self._holder:
            holder, self._holder = self._holder, b""
            await self._kv.put(key, holder)
        return await self._kv.delete(key, last=last)


async def test_a_release_that_lost_its_race_to_a_takeover_leaves_the_new_holder(nc):
    kv = await scratch_bucket(nc)
    assert await Slots(kv, lambda user: f"active.{user}", ONE_JOB).claim("u1", "ended", 1)

    slots = Slots(TakenOverFirst(kv, b"next"), lambda user: f"active.{user}", ONE_JOB)
    await slots.release("u1", "ended")
    assert await slots.held("u1") == ["next"]
