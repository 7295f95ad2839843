"""The one revision-checked update every store uses (`update_entry`: read an entry, change
it, write it with the revision read, and start over when another writer got there first),
and `OwnedRecords` built on it: records a user owns, in a KV bucket under
`<user_id>.<record_id>`, where one server-side filter lists a user's records and the key
itself checks ownership."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from contracts.ids import checked_id
from terra.backoff import retry_delay_s
from terra.errors import TerraError
from terra.nats.listings import live_entries

RecordT = TypeVar("RecordT", bound=BaseModel)
ValueT = TypeVar("ValueT")

# Reads and writes one update may try. The largest of the bounds it replaced (20, 30, 50):
# a burst of logins at one throttle key needs it, and no store gives up sooner than before.
UPDATE_ATTEMPTS = 50

# nats-py raises KeyWrongLastSequenceError when a create or update loses the race, but a
# bare APIError with one of these codes when a delete with `last=` does.
_WRONG_LAST_SEQUENCE = (10071, 10164)


class KeptChanging(TerraError):
    """A key changed under each of `UPDATE_ATTEMPTS` revision-checked writes: too many
    writers at once."""


class Updated(NamedTuple, Generic[ValueT]):
    seen: ValueT | None  # what the change was given (None: the key held no value)
    written: ValueT | None  # what it wrote; None when it wrote nothing


async def update_entry(
    kv: KeyValue, key: str,
    change: Callable[[ValueT | None], ValueT | None | Awaitable[ValueT | None]], *,
    decode: Callable[[bytes], ValueT], encode: Callable[[ValueT], bytes | None],
    create: bool = True,
) -> Updated[ValueT]:
    """Write `change(current)` over `key`, checked against the revision read; after a lost
    race, read again and change that, up to `UPDATE_ATTEMPTS` times (then `KeptChanging`).

    `current` is None when the key holds no value. `change` returns None to write nothing,
    and may be a coroutine function (a slot claim asks whether holders still live).
    `encode` returning None deletes the key (a free training slot is no key at all).
    Without `create`, a key with no value stays so and `change` is not called."""
    for attempt in range(UPDATE_ATTEMPTS):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # never written, deleted or purged
            entry = None
        current = decode(entry.value) if entry is not None and entry.value else None
        if current is None and not create:
            return Updated(None, None)
        new = change(current)
        if inspect.isawaitable(new):
            new = await new
        if new is None:
            return Updated(current, None)
        if await write_checked(kv, key, encode(new), None if entry is None else entry.revision):
            return Updated(current, new)
        # Another writer got there first: change theirs, after a pause of a few
        # milliseconds so that contenders spread out.
        await asyncio.sleep(retry_delay_s(attempt + 1, base_s=0.001, cap_s=0.02))
    raise KeptChanging(f"{key} kept changing under us")


async def write_checked(kv: KeyValue, key: str, value: bytes | None,
                        revision: int | None) -> bool:
    """Write `value` (None: delete the key) unless the key changed since `revision` was
    read (None: it was absent); False when it did."""
    try:
        if value is None:
            if revision is not None:  # an absent key has nothing to delete
                await kv.delete(key, last=revision)
        elif revision is None:
            await kv.create(key, value)  # over a delete marker too
        else:
            await kv.update(key, value, last=revision)
    except APIError as error:
        if isinstance(error, KeyWrongLastSequenceError) or (
                error.err_code in _WRONG_LAST_SEQUENCE):
            return False
        raise
    return True


class OwnedRecords(Generic[RecordT]):
    record_type: type[RecordT]
    id_field: str

    def __init__(self, kv: KeyValue, *, list_timeout_s: float | None = None) -> None:
        self._kv = kv
        # A listing is a watch, which nats-py does not bound: a stream that stops
        # delivering mid-way (its leader lost) would leave it waiting for ever. Bounded,
        # it raises TimeoutError instead (a 503 at the gateway).
        self.list_timeout_s = list_timeout_s

    async def _listed(self, keys: str) -> dict[str, KeyValue.Entry]:
        return await asyncio.wait_for(live_entries(self._kv, keys), self.list_timeout_s)

    def _key(self, user_id: str, record_id: str) -> str:
        # Both parts checked: `*` or `a.b` would reach other users' records.
        return f"{checked_id(user_id, 'user id')}.{checked_id(record_id, 'record id')}"

    def _keys_of_user(self, user_id: str) -> str:
        return f"{checked_id(user_id, 'user id')}.*"

    def _key_of(self, record: RecordT) -> str:
        return self._key(record.user_id, getattr(record, self.id_field))

    async def get(self, user_id: str, record_id: str) -> RecordT | None:
        try:
            entry = await self._kv.get(self._key(user_id, record_id))
        except KeyNotFoundError:
            return None
        return self.record_type.model_validate_json(entry.value) if entry.value else None

    async def list(self, user_id: str) -> list[RecordT]:
        """The user's records, newest first; records made in the same microsecond by
        descending id, so the order is the same at every read (pages rely on it)."""
        # A server-side filter on the user's keys (nats-py's `keys(filters=…)` would read
        # every key of the bucket and match substrings).
        entries = await self._listed(self._keys_of_user(user_id))
        records = [record for entry in entries.values() if (record := self._record(entry))]
        return sorted(records, key=self.position, reverse=True)

    def position(self, record: RecordT) -> tuple:
        """Where a record sits in a listing: its creation time, then its id."""
        return record.created_at, getattr(record, self.id_field)

    async def all(self) -> list[RecordT]:
        """Every user's records (a sweep reads the whole bucket). Other keys sharing the
        bucket (the models bucket's `active.<user_id>` slots) are not records: skipped."""
        entries = await self._listed(">")
        return [record for entry in entries.values() if (record := self._record(entry))]

    def _record(self, entry: KeyValue.Entry) -> RecordT | None:
        """The record an entry holds; None for anything else under the bucket."""
        if not entry.value:
            return None
        try:
            record = self.record_type.model_validate_json(entry.value)
        except ValidationError:
            return None
        return record if self._key_of(record) == entry.key else None

    async def create(self, record: RecordT) -> bool:
        try:
            await self._kv.create(self._key_of(record), _json(record))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(
        self, user_id: str, record_id: str, change: Callable[[RecordT], RecordT | None]
    ) -> RecordT:
        """Write `change(record)` over the stored record (`update_entry`); None from it
        leaves the record as it is. What is stored now; KeyError when there is no record."""
        key = self._key(user_id, record_id)
        seen, written = await update_entry(self._kv, key, change,
                                           decode=self.record_type.model_validate_json,
                                           encode=_json, create=False)
        if seen is None:
            raise KeyError(key)
        return seen if written is None else written

    async def delete(self, user_id: str, record_id: str) -> None:
        # Its bucket keeps one message per key (`KvSpec.rollups`): the delete marker replaces
        # the value, so nothing of it stays readable, and no rollup is needed.
        await self._kv.delete(self._key(user_id, record_id))

    async def erase(self, user_id: str) -> list[str]:
        """Purge every record of a deleted account, by key: one that no longer parses (an
        older schema wrote it) goes too. The ids erased."""
        keys = await live_entries(self._kv, self._keys_of_user(user_id))
        for key in keys:
            await self._kv.delete(key)  # one message per key: the marker replaces it
        return [key.split(".", 1)[1] for key in keys]


def _json(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()
