"""Records a user owns, in a KV bucket under `<user_id>.<record_id>`: one server-side
filter lists a user's records, and the key itself checks ownership."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from contracts.ids import checked_id
from terra.errors import TerraError
from terra.nats.listings import live_entries

RecordT = TypeVar("RecordT", bound=BaseModel)



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
        record = record_id if record_id == "*" else checked_id(record_id, "record id")
        return f"{checked_id(user_id, 'user id')}.{record}"

    def _key_of(self, record: RecordT) -> str:
        return self._key(record.user_id, getattr(record, self.id_field))

    async def get(self, user_id: str, record_id: str) -> RecordT | None:
        found = await self._get(self._key(user_id, record_id))
        return found[0] if found else None

    async def list(self, user_id: str) -> list[RecordT]:
        """The user's records, newest first."""
        # A server-side filter on the user's keys (nats-py's `keys(filters=…)` would read
        # every key of the bucket and match substrings).
        entries = await self._listed(self._key(user_id, "*"))
        records = [record for entry in entries.values() if (record := self._record(entry))]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

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
            await self._kv.create(self._key_of(record), record.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(
        self, user_id: str, record_id: str, change: Callable[[RecordT], RecordT]
    ) -> RecordT:
        key = self._key(user_id, record_id)
        for _ in range(20):
            found = await self._get(key)
            if found is None:
                raise KeyError(key)
            updated = change(found[0])
            try:
                await self._kv.update(key, updated.model_dump_json().encode(), last=found[1])
            except KeyWrongLastSequenceError:
                continue
            return updated
        raise TerraError(f"record {key} kept changing under us")

    async def delete(self, user_id: str, record_id: str) -> None:
        # Its bucket keeps one message per key (`KvSpec.rollups`): the delete marker replaces
        # the value, so nothing of it stays readable, and no rollup is needed.
        await self._kv.delete(self._key(user_id, record_id))

    async def erase(self, user_id: str) -> list[str]:
        """Purge every record of a deleted account, by key: one that no longer parses (an
        older schema wrote it) goes too. The ids erased."""
        keys = await live_entries(self._kv, self._key(user_id, "*"))
        for key in keys:
            await self._kv.delete(key)  # one message per key: the marker replaces it
        return [key.split(".", 1)[1] for key in keys]

    async def _get(self, key: str) -> tuple[RecordT, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return self.record_type.model_validate_json(entry.value), entry.revision
