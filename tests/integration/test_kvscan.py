"""terra.nats.listings on a real nats-server: complete listings of a KV bucket.

On one node: live keys only (deleted and purged ones are held, not listed), a filter, and
the server's subjects answer as the paging expects. On a 3-node cluster under concurrent
writes (where nats-py's drained watch could end early, nats-io/nats.py#995, and which no
identity may create anyway): every listing is complete.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from nats.js import api

from terra.nats.listings import held_keys, live_entries
from testing.cluster import EmbeddedNatsCluster

pytestmark = pytest.mark.integration


async def scratch_bucket(js, name: str, replicas: int = 1):
    return await js.create_key_value(api.KeyValueConfig(
        bucket=name, history=1, replicas=replicas, storage=api.StorageType.FILE))


async def test_live_keys_are_listed_and_markers_are_only_held(nc):
    js = nc.jetstream()
    kv = await scratch_bucket(js, f"kvscan_{time.monotonic_ns()}")
    for key in ("u1.a", "u1.b", "u1.c", "u1.d", "u2.a", "active.u1"):
        await kv.put(key, key.encode())
    await kv.delete("u1.b")
    await kv.purge("u1.c")

    assert {k: e.value for k, e in (await live_entries(kv, "u1.*")).items()} == {
        "u1.a": b"u1.a", "u1.d": b"u1.d"}
    assert sorted(await live_entries(kv)) == ["active.u1", "u1.a", "u1.d", "u2.a"]
    assert await held_keys(kv, "u1.*") == {"u1.a", "u1.b", "u1.c", "u1.d"}
    assert await held_keys(kv, "u3.*") == set()

    # The server pages subjects and says how many there are: what held_keys pages by.
    answer = await js._api_request(f"$JS.API.STREAM.INFO.KV_{kv._name}",
                                   json.dumps({"subjects_filter": "$KV.*.u1.*"}).encode())
    assert answer["total"] == 4 and len(answer["state"]["subjects"]) == 4
    await js.delete_key_value(kv._name)


@pytest.mark.cluster
async def test_listings_stay_complete_on_a_cluster_under_writes(tmp_path):
    cluster = await asyncio.to_thread(EmbeddedNatsCluster(tmp_path / "cluster").start)
    nc = None
    try:  # the nodes stop whatever fails, the connection included
        nc = await nats.connect(cluster.urls)
        kv = await scratch_bucket(nc.jetstream(), "kvscan", replicas=3)
        stable = {f"u1.k{i}" for i in range(300)} | {f"u2.k{i}" for i in range(300)}
        await asyncio.gather(*(kv.put(key, b"x") for key in stable))
        stop = asyncio.Event()

        async def write(writer: int) -> None:  # other users' records keep changing
            count = 0
            while not stop.is_set():
                await kv.put(f"w{writer}.k{count % 100}", b"y" * 64)
                count += 1

        writers = [asyncio.create_task(write(n)) for n in range(4)]
        try:
            for _ in range(30):
                assert stable <= (await live_entries(kv)).keys()
                assert (await live_entries(kv, "u1.*")).keys() == {
                    key for key in stable if key.startswith("u1.")}
        finally:
            stop.set()
            await asyncio.gather(*writers)
    finally:
        if nc is not None:
            await nc.close()
        await asyncio.to_thread(cluster.stop)
