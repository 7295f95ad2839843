"""Complete listings of a KV bucket: every key that exists, none missed.

A drained watch (what nats-py's `keys()` does) stops at the first message whose pending
count reads 0. In a cluster under concurrent writes that count can read 0 before the
initial values are all delivered, and the listing comes back short (nats-io/nats.py#995;
seen here after a node restart, and on one node under load). Erasures, sweeps and
galleries need every key, so the watch is only the fast path: the stream's leader then
names every key it holds a message for, and each one the watch did not deliver (as a
value or as a delete marker) is read by key.
"""

from __future__ import annotations

import asyncio
import json

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

_PARALLEL_READS = 16


async def live_entries(kv: KeyValue, keys: str = ">") -> dict[str, KeyValue.Entry]:
    """Every live entry under the `keys` filter (NATS wildcards `*` and `>`), by key: each
    key that existed before the call and still exists after it, at least."""
    seen: dict[str, KeyValue.Entry | None] = {}  # None: the key's last word is a marker
    watcher = await kv.watch(keys)  # markers too: a deleted key is then known, not re-read
    try:
        async for entry in watcher:
            if entry is None:  # the end of what exists now, or so nats-py believes
                break
            # A key written while we read comes twice: the latest wins.
            seen[entry.key] = None if entry.operation else entry
    finally:
        await watcher.stop()
    missed = sorted(await held_keys(kv, keys) - seen.keys())
    if missed:
        limit = asyncio.Semaphore(_PARALLEL_READS)

        async def read(key: str) -> None:
            async with limit:
                try:
                    seen[key] = await kv.get(key)
                except KeyNotFoundError:  # deleted or purged (KeyDeletedError is one)
                    return

        await asyncio.gather(*(read(key) for key in missed))
    return {key: entry for key, entry in seen.items() if entry is not None}


async def held_keys(kv: KeyValue, keys: str = ">") -> set[str]:
    """The keys under `keys` that the bucket's stream holds a message for (a value, a
    delete or a purge marker), as its leader answers: STREAM.INFO with a subjects filter.

    Past one page (100,000 subjects) the server pages a name-sorted list it makes afresh
    at each call, so keys expiring between two calls shift the list left and an offset
    would skip as many. Each page therefore starts on the last subject of the one before;
    where that subject is not its first, the list moved, and the page is asked again
    further back."""
    # nats-py (2.16) gives no public handle on a bucket's stream, nor pages subjects.
    js, stream, prefix = kv._js, kv._stream, kv._pre

    async def page_at(offset: int) -> tuple[list[str], int]:
        request = {"subjects_filter": f"{prefix}{keys}", "offset": offset}
        answer = await js._api_request(f"{js._prefix}.STREAM.INFO.{stream}",
                                       json.dumps(request).encode(), timeout=js._timeout)
        subjects = (answer.get("state") or {}).get("subjects") or {}
        return sorted(subjects), int(answer.get("total") or len(subjects))

    page, total = await page_at(0)
    found = set(page)
    offset = 0
    while page and offset + len(page) < total:
        anchor = page[-1]
        offset += len(page) - 1
        back = 1
        while True:
            page, total = await page_at(offset)
            if offset == 0 or (page and page[0] <= anchor):
                break  # nothing after the anchor was skipped
            offset = max(0, offset - back)
            back *= 2
        found.update(page)
    return {subject.removeprefix(prefix) for subject in found}
