"""Users' LoRA models in the models KV bucket: records under `<user_id>.<model_id>`, and
`active.<user_id>` naming the one training a user may have running."""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.topology import MODELS_KV, active_training_key, model_key
from contracts.training import ModelRecord
from terra.errors import TerraError


class ModelStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> ModelStore:
        return cls(await js.key_value(MODELS_KV.bucket))

    async def get(self, user_id: str, model_id: str) -> ModelRecord | None:
        found = await self._get(model_key(user_id, model_id))
        return found[0] if found else None

    async def list(self, user_id: str) -> list[ModelRecord]:
        """The user's models, newest first."""
        # A server-side filter on the user's keys (nats-py's `keys(filters=…)` would read
        # every key of the bucket and match substrings).
        watcher = await self._kv.watch(model_key(user_id, "*"), ignore_deletes=True,
                                       meta_only=True)
        keys = []
        async for entry in watcher:
            if entry is None:  # the end of what exists now
                break
            keys.append(entry.key)
        await watcher.stop()
        records = [found[0] for key in keys if (found := await self._get(key))]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    async def create(self, record: ModelRecord) -> bool:
        try:
            await self._kv.create(model_key(record.user_id, record.model_id),
                                  record.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def update(
        self, user_id: str, model_id: str, change: Callable[[ModelRecord], ModelRecord]
    ) -> ModelRecord:
        key = model_key(user_id, model_id)
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
        raise TerraError(f"model {key} kept changing under us")

    async def delete(self, user_id: str, model_id: str) -> None:
        await self._kv.delete(model_key(user_id, model_id))

    async def claim_active(self, user_id: str, job_id: str) -> bool:
        """Take the user's one training slot; False when another training holds it."""
        try:
            await self._kv.create(active_training_key(user_id), job_id.encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def release_active(self, user_id: str, job_id: str) -> None:
        """Free the slot if this job still holds it."""
        key = active_training_key(user_id)
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return
        if entry.value and entry.value.decode() == job_id:
            try:
                await self._kv.delete(key, last=entry.revision)
            except KeyWrongLastSequenceError:
                pass

    async def _get(self, key: str) -> tuple[ModelRecord, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return ModelRecord.model_validate_json(entry.value), entry.revision
