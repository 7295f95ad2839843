"""Uploaded photo sets that no model needs any more: which are past their retention (a
pure rule), and the supervised sweep that deletes them.

A photo set is everything under `uploads/<user>/<dataset>/`; it exists once its
`manifest.json` does (the gateway writes it last), and only sets with a manifest are
considered. A set is kept while a model that is training or ready names it
(`ModelRecord.dataset_id`); one used only by failed or cancelled models, or by none (its
models were deleted), is deleted `TERRA_DATASET_RETENTION_DAYS` after its upload.

The sweep reads the photo sets first and the models second, so a training admitted in
between is seen and keeps its set. One admitted after the models were read, on a set
already past its retention, loses it: the trainer then fails that job with not_found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from contracts.base import utcnow
from contracts.ids import InvalidId, checked_id
from contracts.topology import OBJECTS
from contracts.training import DatasetManifest, ModelRecord, ModelStatus
from terra.errors import StorageError
from terra.records.objects import ObjectStorage
from terra.records.store import OwnedRecords
from trainer_service.config import TrainerSettings

log = logging.getLogger(__name__)

UPLOADS = "uploads/"
MANIFEST = "manifest.json"
# A model in one of these states needs its photo set: to train on, or to train again.
KEEPS_ITS_PHOTOS = frozenset({ModelStatus.TRAINING, ModelStatus.READY})


@dataclass(frozen=True)
class PhotoSet:
    user_id: str
    dataset_id: str
    created_at: datetime

    @property
    def prefix(self) -> str:
        return OBJECTS.upload_key(self.user_id, self.dataset_id, "")


def expired(photo_sets: Iterable[PhotoSet], models: Iterable[ModelRecord], *,
            now: datetime, retention: timedelta) -> list[PhotoSet]:
    """The sets past `retention` that no training or ready model of their owner uses."""
    in_use = {(model.user_id, model.dataset_id) for model in models
              if model.dataset_id is not None and model.status in KEEPS_ITS_PHOTOS}
    return [photo_set for photo_set in photo_sets
            if now - photo_set.created_at >= retention
            and (photo_set.user_id, photo_set.dataset_id) not in in_use]


def manifest_owner(key: str) -> tuple[str, str] | None:
    """(user id, dataset id) of `uploads/<user>/<dataset>/manifest.json`, else None."""
    parts = key.split("/")
    if len(parts) != 4 or f"{parts[0]}/" != UPLOADS or parts[3] != MANIFEST:
        return None
    try:
        return checked_id(parts[1], "user id"), checked_id(parts[2], "dataset id")
    except InvalidId:
        return None


class DatasetRetention:
    """Deletes photo sets past their retention; one sweep every `dataset_sweep_s`."""

    def __init__(self, storage: ObjectStorage, models: OwnedRecords[ModelRecord],
                 settings: TrainerSettings) -> None:
        self.storage = storage
        self.models = models
        self.settings = settings

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.settings.dataset_retention_days)

    async def photo_sets(self) -> list[PhotoSet]:
        """Every user's photo sets, from their manifests (one unreadable is left alone)."""
        found = []
        for key in await self.storage.list_keys(UPLOADS):
            if (owner := manifest_owner(key)) is None:
                continue
            try:
                manifest = DatasetManifest.model_validate_json(
                    await self.storage.get_bytes(key))
            except (StorageError, ValidationError) as exc:  # deleted meanwhile, or damaged
                log.warning("photo set skipped", extra={"key": key, "error": str(exc)})
                continue
            found.append(PhotoSet(*owner, created_at=manifest.created_at))
        return found

    async def sweep(self) -> int:
        """Delete the sets past their retention that no model needs; how many."""
        now = utcnow()
        old = [s for s in await self.photo_sets() if now - s.created_at >= self.retention]
        if not old:
            return 0  # nothing old enough: no need to read the models
        # Every model, or no deletion at all (a listing cut short would miss users).
        models = await asyncio.wait_for(self.models.all(),
                                        self.settings.dataset_sweep_timeout_s)
        deleted = 0
        for photo_set in expired(old, models, now=now, retention=self.retention):
            await self.storage.delete_prefix(photo_set.prefix)
            deleted += 1
        if deleted:
            log.info("expired photo sets deleted", extra={"count": deleted})
        return deleted

    async def sweep_forever(self) -> None:
        """Supervised: a failed sweep is tried again at the next one."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("photo set retention sweep failed; next one in a while")
            await asyncio.sleep(self.settings.dataset_sweep_s)
