"""Users' LoRA models in the models KV bucket: records under `<user_id>.<model_id>`, and
`active.<user_id>` naming the one training a user may have running."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from contracts.topology import MODELS_KV, active_training_key
from contracts.training import ModelRecord
from terra.records import OwnedRecords


class ModelStore(OwnedRecords[ModelRecord]):
    record_type = ModelRecord
    id_field = "model_id"

    @classmethod
    async def open(cls, js: JetStreamContext) -> ModelStore:
        return cls(await js.key_value(MODELS_KV.bucket))

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
