"""The trainer's objects: the user's photos in, checkpoints and the finished LoRA out.

    uploads/<user>/<dataset>/manifest.json, <image>.jpg        (written by the gateway)
    models/<user>/<model>/checkpoint-<step>.bin, checkpoint.json  (the latest only)
    models/<user>/<model>/lora.safetensors, metadata.json, samples/<n>.png
"""

from __future__ import annotations

import io
import json
from typing import Literal

from PIL import Image

from contracts.topology import OBJECTS
from contracts.training import DatasetManifest
from terra.errors import ObjectMissing, StorageError
from terra.records.objects import ObjectStorage


class TrainingStore:
    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    async def load_dataset(self, user_id: str, dataset_id: str) -> list[Image.Image] | None:
        """The dataset's photos, or None when the user has no such dataset."""
        manifest_key = OBJECTS.upload_key(user_id, dataset_id, "manifest.json")
        try:
            manifest = DatasetManifest.model_validate_json(
                await self.storage.get_bytes(manifest_key))
        except StorageError:
            return None
        images = []
        for image in manifest.images:
            data = await self.storage.get_bytes(image.key)
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        return images

    def _model(self, user_id: str, model_id: str, name: str) -> str:
        return OBJECTS.model_key(user_id, model_id, name)

    async def save_checkpoint(self, user_id: str, model_id: str, step: int, data: bytes,
                              previous: int | None | Literal["unread"] = "unread") -> None:
        """Store a checkpoint and point at it, then delete the one it replaces: `previous`,
        the step the run already knows is stored (None: none), or, left out, the pointer's."""
        # Data first, then the pointer: a crash in between leaves the previous pair intact.
        await self.storage.put_bytes(self._model(user_id, model_id, f"checkpoint-{step}.bin"),
                                     data)
        if previous == "unread":
            previous = await self.checkpoint_step(user_id, model_id)
        await self.storage.put_bytes(self._model(user_id, model_id, "checkpoint.json"),
                                     json.dumps({"step": step}).encode(), "application/json")
        if previous is not None and previous != step:
            await self.storage.delete(
                self._model(user_id, model_id, f"checkpoint-{previous}.bin"))

    async def load_checkpoint(self, user_id: str, model_id: str, step: int) -> bytes:
        """The checkpoint of `step` (which `checkpoint_step` named)."""
        return await self.storage.get_bytes(
            self._model(user_id, model_id, f"checkpoint-{step}.bin"))

    async def drop_checkpoints(self, user_id: str, model_id: str) -> None:
        step = await self.checkpoint_step(user_id, model_id)
        await self.storage.delete(self._model(user_id, model_id, "checkpoint.json"))
        if step is not None:
            await self.storage.delete(
                self._model(user_id, model_id, f"checkpoint-{step}.bin"))

    async def checkpoint_step(self, user_id: str, model_id: str) -> int | None:
        """The step of the latest stored checkpoint, if any (reads only the pointer)."""
        key = self._model(user_id, model_id, "checkpoint.json")
        try:
            pointer = await self.storage.get_bytes(key)  # one request, not exists + get
        except ObjectMissing:
            return None
        return int(json.loads(pointer)["step"])

    async def save_result(
        self, user_id: str, model_id: str, lora: bytes, metadata: dict,
        samples: list[Image.Image],
    ) -> tuple[str, list[str]]:
        """Store the LoRA, its metadata and sample PNGs; returns the LoRA and sample keys."""
        sample_keys = []
        for index, sample in enumerate(samples):
            buffer = io.BytesIO()
            sample.save(buffer, format="PNG")
            key = self._model(user_id, model_id, f"samples/{index}.png")
            await self.storage.put_bytes(key, buffer.getvalue(), "image/png")
            sample_keys.append(key)
        await self.storage.put_bytes(self._model(user_id, model_id, "metadata.json"),
                                     json.dumps(metadata, default=str).encode(),
                                     "application/json")
        lora_key = self._model(user_id, model_id, "lora.safetensors")
        await self.storage.put_bytes(lora_key, lora)  # last: its presence means complete
        return lora_key, sample_keys

    async def erase_user(self, user_id: str) -> int:
        """Every photo and model of a deleted account."""
        return sum([await self.storage.delete_prefix(p) for p in OBJECTS.user_prefixes(user_id)
                    if not p.startswith("images/")])
