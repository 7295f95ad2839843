"""Complete listings of a KV bucket: every key that exists, none missed.

A drained watch (what nats-py's `keys()` does) stops at the first message whose pending
count reads 0. In a cluster under concurrent writes that count can read 0 before the
initial values are all delivered, and the listing comes back short (nats-io/nats.py#995;
seen here after a node restart). Erasures, sweeps and galleries need every key, so the
watch is only the fast path: the stream's leader then names every key it holds a message
for, and each one the watch did not deliver is read by key.
"""

from __future__ import annotations

import json

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue


async def live_entries(kv: KeyValue, keys: str = ">") -> dict[str, KeyValue.Entry]:
    """Every live entry under the `keys` filter (NATS wildcards `*` and `>`), by key: each
    key that existed before the call and still exists after it, at least."""
    found: dict[str, KeyValue.Entry] = {}
    watcher = await kv.watch(keys, ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:  # the end of what exists now, or so nats-py believes
                break
            found[entry.key] = entry  # a key written while we read comes twice: latest wins
    finally:
        await watcher.stop()
    for key in sorted(await held_keys(kv, keys) - found.keys()):
        try:
            found[key] = await kv.get(key)
        except KeyNotFoundError:  # deleted or purged (KeyDeletedError is one)
            continue
    return found


async def held_keys(kv: KeyValue, keys: str = ">") -> set[str]:
    """The keys under `keys` that the bucket's stream holds a message for (a value, a
    delete or a purge marker), as its leader answers: STREAM.INFO with a subjects
    filter, paged."""
    # nats-py (2.16) gives no public handle on a bucket's stream, nor pages subjects.
    js, stream, prefix = kv._js, kv._stream, kv._pre
    subjects: dict[str, int] = {}
    while True:
        request = {"subjects_filter": f"{prefix}{keys}", "offset": len(subjects)}
        answer = await js._api_request(f"{js._prefix}.STREAM.INFO.{stream}",
                                       json.dumps(request).encode(), timeout=js._timeout)
        page = (answer.get("state") or {}).get("subjects") or {}
        if not page.keys() - subjects.keys():
            break
        subjects.update(page)
        if len(subjects) >= answer.get("total", 0):
            break
    return {subject.removeprefix(prefix) for subject in subjects}
