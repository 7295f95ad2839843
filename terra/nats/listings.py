"""Complete listings of a KV bucket: every key that exists, none missed, with no consumer.

A watch (what nats-py's `keys()` and `watch()` do) creates a consumer on the bucket's
stream, a right no identity but the operator holds (`contracts.permissions`: whoever may
create consumers on a stream may rewrite every consumer on it). It was also unreliable:
a drained watch can stop before the initial values are all delivered (nats-io/nats.py#995).
So the stream's leader names every key it holds a message for (STREAM.INFO with a
subjects filter), and each is read by key, a few at a time.
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
    found: dict[str, KeyValue.Entry] = {}
    limit = asyncio.Semaphore(_PARALLEL_READS)

    async def read(key: str) -> None:
        async with limit:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # deleted or purged (KeyDeletedError is one)
                return
        if entry.value is not None:
            found[key] = entry

    await asyncio.gather(*(read(key) for key in sorted(await held_keys(kv, keys))))
    return found


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
