"""terra.kvscan: a listing is complete even when the watch behind it ends early."""

from __future__ import annotations

import pytest

from terra.kvscan import held_keys, live_entries
from tests.fakes import FakeKeyValue


async def bucket_of(keys: list[str]) -> FakeKeyValue:
    kv = FakeKeyValue("probe")
    for key in keys:
        await kv.put(key, key.encode())
    return kv


@pytest.mark.parametrize("ends_after", [None, 0, 1, 4])
async def test_every_live_key_is_listed_however_early_the_watch_ends(ends_after):
    kv = await bucket_of([f"u1.k{i}" for i in range(6)] + ["u2.k0", "active.u1"])
    await kv.delete("u1.k2")
    await kv.purge("u1.k3")
    kv.watch_ends_early_after = ends_after

    mine = await live_entries(kv, "u1.*")
    everything = await live_entries(kv)

    assert sorted(mine) == ["u1.k0", "u1.k1", "u1.k4", "u1.k5"]
    assert {key: entry.value for key, entry in mine.items()} == {
        key: key.encode() for key in mine}
    assert sorted(everything) == ["active.u1", "u1.k0", "u1.k1", "u1.k4", "u1.k5", "u2.k0"]


async def test_a_complete_watch_costs_no_read_by_key():
    kv = await bucket_of(["u1.a", "u1.b"])
    await live_entries(kv, "u1.*")
    assert [op for op, _ in kv.ops if op == "get"] == []


async def test_the_streams_subjects_are_read_page_by_page():
    kv = await bucket_of([f"k{i}" for i in range(10)])
    await kv.delete("k9")
    kv.subjects_page_size = 3

    assert await held_keys(kv) == {f"k{i}" for i in range(10)}  # the marker's key too
    assert [op for op, _ in kv.ops if op == "stream_info"] == ["stream_info"] * 4


async def test_an_empty_filter_lists_nothing():
    kv = await bucket_of(["u2.a"])
    kv.watch_ends_early_after = 0
    assert await live_entries(kv, "u1.*") == {}
    assert await held_keys(kv, "u1.*") == set()
