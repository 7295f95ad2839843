"""Users' LoRA models in the models KV bucket: records under `<user_id>.<model_id>`, and
`active.<user_id>` naming the one training a user may have running."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from contracts.topology import MODELS_KV, active_training_key
from contracts.training import ModelRecord
from terra.errors import TerraError
from terra.records.store import OwnedRecords

_ATTEMPTS = 20


class ModelStore(OwnedRecords[ModelRecord]):
    record_type = ModelRecord
    id_field = "model_id"

    @classmethod
    async def open(cls, js: JetStreamContext, *,
                   list_timeout_s: float | None = None) -> ModelStore:
        return cls(await js.key_value(MODELS_KV.bucket), list_timeout_s=list_timeout_s)

    async def claim_active(
        self, user_id: str, job_id: str,
        still_live: Callable[[str], Awaitable[bool]] | None = None,
    ) -> bool:
        """Take the user's one training slot for `job_id`. True when it is ours: taken now,
        or held by this same job already (a retried request). False while another training
        holds it; a holder that `still_live` says has ended (its release was lost) is
        replaced, revision-checked so two claims cannot both take it."""
        key = active_training_key(user_id)
        for _ in range(_ATTEMPTS):
            try:
                await self._kv.create(key, job_id.encode())
                return True
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:  # released meanwhile (KeyDeletedError included)
                continue
            holder = entry.value.decode() if entry.value else ""
            if holder == job_id:
                return True
            if holder and (still_live is None or await still_live(holder)):
                return False
            try:
                await self._kv.update(key, job_id.encode(), last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                continue
        raise TerraError(f"the training slot of {user_id} kept changing")

    async def forget_active(self, user_id: str) -> None:
        """A deleted account's slot, whoever holds it (a job whose record never got
        written included); one message per key, so nothing of it stays."""
        await self._kv.delete(active_training_key(user_id))

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
