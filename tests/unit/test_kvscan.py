"""terra.nats.listings: a listing asks the stream which keys it holds and reads each (no watch: no
consumer); subjects are paged; an account's records are erased by key."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError

from contracts.ids import new_id
from contracts.training import ModelRecord
from terra.nats.listings import held_keys, live_entries
from terra.records.models import ModelStore
from tests.fakes import FakeKeyValue


async def bucket_of(keys: list[str]) -> FakeKeyValue:
    kv = FakeKeyValue("probe")
    for key in keys:
        await kv.put(key, key.encode())
    return kv


async def test_every_live_key_is_listed_and_no_deleted_or_purged_one():
    kv = await bucket_of([f"u1.k{i}" for i in range(6)] + ["u2.k0", "active.u1"])
    await kv.delete("u1.k2")
    await kv.purge("u1.k3")

    mine = await live_entries(kv, "u1.*")
    everything = await live_entries(kv)

    assert sorted(mine) == ["u1.k0", "u1.k1", "u1.k4", "u1.k5"]
    assert {key: entry.value for key, entry in mine.items()} == {
        key: key.encode() for key in mine}
    assert sorted(everything) == ["active.u1", "u1.k0", "u1.k1", "u1.k4", "u1.k5", "u2.k0"]


async def test_a_listing_asks_the_stream_which_keys_it_holds_and_reads_each():
    kv = await bucket_of(["u1.a", "u1.b", "u2.a"])
    await kv.delete("u1.b")
    assert sorted(await live_entries(kv, "u1.*")) == ["u1.a"]
    # One question to the stream, then the held keys by key (the marker's included).
    reads = [(op, key) for op, key in kv.ops if op in ("stream_info", "get")]
    assert reads[0] == ("stream_info", "$KV.probe.u1.*")
    assert sorted(reads[1:]) == [("get", "u1.a"), ("get", "u1.b")]


async def test_a_key_deleted_between_the_question_and_its_read_is_not_listed():
    kv = await bucket_of(["u1.a", "u1.b"])
    kv.fail_next("get", KeyNotFoundError())  # the first key read is gone by then
    assert len(await live_entries(kv, "u1.*")) == 1


async def test_the_streams_subjects_are_read_page_by_page():
    kv = await bucket_of([f"k{i:02}" for i in range(10)])
    await kv.delete("k09")
    kv.subjects_page_size = 3

    assert await held_keys(kv) == {f"k{i:02}" for i in range(10)}  # the marker's key too
    # Pages overlap by one subject: 0-2, 2-4, 4-6, 6-8, 8-9.
    assert [op for op, _ in kv.ops if op == "stream_info"] == ["stream_info"] * 5


async def test_keys_expiring_between_pages_shift_nothing_past_the_listing():
    kv = await bucket_of([f"k{i:02}" for i in range(20)])
    kv.subjects_page_size = 4
    expiring = iter([["k00", "k01", "k02"], [], ["k04", "k05", "k06", "k07"], []])

    def some_expire() -> None:  # the oldest keys' TTL runs out between two pages
        for key in next(expiring, []):
            kv.expire(key)

    kv.after_stream_info = some_expire
    held = await held_keys(kv)
    assert {f"k{i:02}" for i in range(8, 20)} <= held  # every key that outlived the listing


async def test_an_empty_filter_lists_nothing():
    kv = await bucket_of(["u2.a"])
    assert await live_entries(kv, "u1.*") == {}
    assert await held_keys(kv, "u1.*") == set()


async def test_erasing_an_account_purges_its_records_even_unreadable_ones():
    kv = FakeKeyValue("models")
    models = ModelStore(kv)
    kept = ModelRecord(model_id=new_id(), user_id="u2", trigger_word="zqx")
    mine = ModelRecord(model_id=new_id(), user_id="u1", trigger_word="vbn")
    await models.create(kept)
    await models.create(mine)
    await kv.put("u1.m0", b'{"written by": "an older schema"}')

    assert sorted(await models.erase("u1")) == sorted([mine.model_id, "m0"])
    assert kv.live_keys() == [f"u2.{kept.model_id}"]
