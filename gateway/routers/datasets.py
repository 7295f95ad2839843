"""Uploaded photo sets: list yours (and the models trained on each), delete one.

The gateway writes `uploads/` (contracts.topology.OBJECTS.owners), so it deletes there too.
A set exists once its manifest does; trainer_service deletes sets that no training or
ready model uses once `TERRA_DATASET_RETENTION_DAYS` have passed.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from contracts.ids import Id, InvalidId, checked_id
from contracts.topology import OBJECTS
from contracts.training import ModelStatus
from gateway.datasets import MANIFEST, load_manifest
from gateway.deps import CurrentUser, Models, Storage
from gateway.problems import Problem

# Declared apart from the training router's `/api/training/{job_id}/...` routes: no path
# of those (`/status`, `/status/{id}`, POST `/{job_id}/cancel`) answers GET or DELETE here.
router = APIRouter(prefix="/api/training/datasets", tags=["training"])


class DatasetModel(BaseModel):
    model_id: str
    status: str


class DatasetView(BaseModel):
    dataset_id: str
    created_at: str
    image_count: int
    models: list[DatasetModel]  # yours, trained on this set


@router.get("", response_model=list[DatasetView])
async def list_datasets(caller: CurrentUser, storage: Storage,
                        models: Models) -> list[DatasetView]:
    """Your photo sets, newest first, each with the models trained on it."""
    user_id = caller.user_id
    prefix = uploads_of(user_id)
    ids = []
    for key in await storage.list_keys(prefix):
        dataset_id, _, name = key.removeprefix(prefix).partition("/")
        if name == MANIFEST and is_id(dataset_id):
            ids.append(dataset_id)
    manifests = await asyncio.gather(*(load_manifest(storage, user_id, i) for i in ids))
    trained = await models.list(user_id)
    views = [DatasetView(
        dataset_id=dataset_id, created_at=manifest.created_at.isoformat(),
        image_count=len(manifest.images),
        models=[DatasetModel(model_id=m.model_id, status=m.status.value)
                for m in trained if m.dataset_id == dataset_id])
        for dataset_id, manifest in zip(ids, manifests, strict=True)
        if manifest is not None]  # None: deleted while we listed
    return sorted(views, key=lambda view: view.created_at, reverse=True)


def uploads_of(user_id: str) -> str:
    """`uploads/<user>/`: the folder of the user's photo sets."""
    return next(p for p in OBJECTS.user_prefixes(user_id) if p.startswith("uploads/"))


def is_id(value: str) -> bool:
    try:
        checked_id(value)
    except InvalidId:
        return False
    return True


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(dataset_id: Id, caller: CurrentUser, storage: Storage,
                         models: Models) -> Response:
    """Delete a photo set and every photo in it. Models already trained on it keep working;
    a model still training on it must be cancelled (or finish) first."""
    user_id = caller.user_id
    if await load_manifest(storage, user_id, dataset_id) is None:
        raise Problem(404, "not-found", f"No photo set {dataset_id}.")
    training = [m.model_id for m in await models.list(user_id)
                if m.dataset_id == dataset_id and m.status is ModelStatus.TRAINING]
    if training:
        raise Problem(409, "conflict", "A model is still training on this photo set; cancel "
                      "the training first.", models=training)
    await storage.delete_prefix(OBJECTS.upload_key(user_id, dataset_id, ""))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
