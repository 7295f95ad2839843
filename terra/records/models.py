"""Users' LoRA models in the models KV bucket: records under `<user_id>.<model_id>`, and
`active.<user_id>` naming the one training a user may have running (a `Slots` key)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts.topology import MODELS_KV, active_training_key
from contracts.training import ModelRecord
from terra.records.slots import ONE_JOB, Slots, StillLive
from terra.records.store import OwnedRecords


class ModelStore(OwnedRecords[ModelRecord]):
    record_type = ModelRecord
    id_field = "model_id"

    def __init__(self, kv: KeyValue, *, list_timeout_s: float | None = None) -> None:
        super().__init__(kv, list_timeout_s=list_timeout_s)
        self._training_slot = Slots(kv, active_training_key, ONE_JOB)

    @classmethod
    async def open(cls, js: JetStreamContext, *,
                   list_timeout_s: float | None = None) -> ModelStore:
        return cls(await js.key_value(MODELS_KV.bucket), list_timeout_s=list_timeout_s)

    async def claim_active(self, user_id: str, job_id: str,
                           still_live: StillLive | None = None) -> bool:
        """Take the user's one training slot for `job_id`. True when it is ours: taken now,
        or held by this same job already (a retried request). False while another training
        holds it; a holder that `still_live` says has ended (its release was lost) is
        replaced, revision-checked so two claims cannot both take it."""
        return await self._training_slot.claim(user_id, job_id, 1, still_live)

    async def forget_active(self, user_id: str) -> None:
        """A deleted account's slot, whoever holds it (a job whose record never got
        written included); one message per key, so nothing of it stays."""
        await self._training_slot.forget(user_id)

    async def release_active(self, user_id: str, job_id: str) -> None:
        """Free the slot if this job still holds it."""
        await self._training_slot.release(user_id, job_id)
