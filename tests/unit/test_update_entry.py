"""`terra.records.store.update_entry`, the one revision-checked update, over an in-memory
KV: a lost race is changed again on top of the winner's value, a change that returns None
writes nothing, and a key that never stops changing ends in `KeptChanging`."""

from __future__ import annotations

import pytest

from terra.records import store
from terra.records.store import UPDATE_ATTEMPTS, KeptChanging, Updated, update_entry
from tests.fakes import FakeKeyValue


class RacedKeyValue(FakeKeyValue):
    """Another writer adds one to the counter just before each of our next `races`
    updates."""

    def __init__(self, races: int) -> None:
        super().__init__("counters")
        self.races = races

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        if self.races:
            self.races -= 1
            await self.put(key, str(int((await self.get(key)).value) + 1).encode())
        return await super().update(key, value, last)


async def add_one(kv: FakeKeyValue, key: str = "n") -> Updated[int]:
    return await update_entry(kv, key, lambda n: (n or 0) + 1,
                              decode=int, encode=lambda n: str(n).encode())


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr(store, "retry_delay_s", lambda *args, **kwargs: 0.0)


async def test_a_lost_race_is_changed_again_on_top_of_the_winner():
    kv = RacedKeyValue(races=1)
    await kv.put("n", b"1")

    assert await add_one(kv) == Updated(seen=2, written=3)  # 1 → 2 theirs, 2 → 3 ours
    assert (await kv.get("n")).value == b"3"


async def test_an_absent_key_is_created_and_a_deleted_one_created_again():
    kv = FakeKeyValue()
    assert await add_one(kv) == Updated(seen=None, written=1)
    await kv.delete("n")
    assert await add_one(kv) == Updated(seen=None, written=1)
    assert [op for op, _ in kv.ops if op != "get"] == ["create", "delete", "create"]


async def test_a_change_that_returns_none_writes_nothing():
    kv = FakeKeyValue()
    await kv.put("n", b"7")

    kept = await update_entry(kv, "n", lambda n: None, decode=int,
                              encode=lambda n: str(n).encode())
    assert kept == Updated(seen=7, written=None)
    assert kv.writes("n") == 1  # the put


async def test_without_create_an_absent_key_stays_absent_and_is_not_changed():
    kv = FakeKeyValue()
    changed = []
    kept = await update_entry(kv, "n", lambda n: changed.append(n) or 1, decode=int,
                              encode=lambda n: str(n).encode(), create=False)
    assert kept == Updated(seen=None, written=None)
    assert changed == [] and kv.writes("n") == 0


async def test_an_encoding_of_none_deletes_the_key_revision_checked():
    kv = FakeKeyValue()
    await kv.put("n", b"1")
    await update_entry(kv, "n", lambda n: 0, decode=int,
                       encode=lambda n: str(n).encode() if n else None)
    assert kv.live_keys() == []
    assert ("delete", "n") in kv.ops


async def test_a_key_that_keeps_changing_ends_in_kept_changing_after_the_bound():
    kv = RacedKeyValue(races=UPDATE_ATTEMPTS)
    await kv.put("n", b"0")

    with pytest.raises(KeptChanging):
        await add_one(kv)
    assert kv.ops.count(("update", "n")) == UPDATE_ATTEMPTS
    assert (await kv.get("n")).value == str(UPDATE_ATTEMPTS).encode()  # theirs, all kept
