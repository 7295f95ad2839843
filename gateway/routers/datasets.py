"""Uploaded photo sets: list yours (and the models trained on each; all at once, or a page
at a time), delete one.

The gateway writes `uploads/` (contracts.topology.OBJECTS.owners), so it deletes there too.
A set exists once its manifest does; trainer_service deletes sets that no training or
ready model uses once `TERRA_DATASET_RETENTION_DAYS` have passed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from contracts.ids import Id, InvalidId, checked_id
from contracts.topology import OBJECTS
from contracts.training import DatasetManifest, ModelRecord, ModelStatus
from gateway.datasets import MANIFEST, load_manifest
from gateway.deps import CurrentUser, Models, Storage
from gateway.listing import Page, Paging, Position, Scope
from gateway.problems import Problem
from terra.records.objects import ObjectStorage
from terra.records.store import OwnedRecords

# Declared apart from the training router's `/api/training/{job_id}/...` routes: no path
# of those (`/status`, `/status/{id}`, POST `/{job_id}/cancel`) answers GET or DELETE here.
router = APIRouter(prefix="/api/training/datasets", tags=["training"])
mine = APIRouter(prefix="/api/me", tags=["training"])


class DatasetModel(BaseModel):
    model_id: str = Field(description="A model of yours trained on this set.")
    status: str = Field(description="Its status: training, ready, failed or cancelled.")


class DatasetView(BaseModel):
    dataset_id: str
    created_at: str
    image_count: int
    models: list[DatasetModel]  # yours, trained on this set


@router.get("", response_model=list[DatasetView])
async def list_datasets(caller: CurrentUser, storage: Storage,
                        models: Models) -> list[DatasetView]:
    """Your photo sets, newest first, each with the models trained on it."""
    manifests, trained = await _sets_of(caller.user_id, storage, models)
    views = [DatasetView(
        dataset_id=manifest.dataset_id, created_at=manifest.created_at.isoformat(),
        image_count=len(manifest.images),
        models=_trained_on(trained, manifest.dataset_id))
        for manifest in manifests]
    return sorted(views, key=lambda view: view.created_at, reverse=True)


def _trained_on(trained: list[ModelRecord], dataset_id: str) -> list[DatasetModel]:
    return [DatasetModel(model_id=m.model_id, status=m.status.value)
            for m in trained if m.dataset_id == dataset_id]


async def _sets_of(user_id: str, storage: ObjectStorage, models: OwnedRecords[ModelRecord],
                   ) -> tuple[list[DatasetManifest], list[ModelRecord]]:
    """The user's photo sets (every manifest under `uploads/<user>/`) and models."""
    prefix = uploads_of(user_id)
    ids = []
    for key in await storage.list_keys(prefix):
        dataset_id, _, name = key.removeprefix(prefix).partition("/")
        if name == MANIFEST and is_id(dataset_id):
            ids.append(dataset_id)
    manifests, trained = await asyncio.gather(
        asyncio.gather(*(load_manifest(storage, user_id, i) for i in ids)),
        models.list(user_id))
    # None: deleted while we listed. A set is named by its folder (what deletes it).
    return [m if m.dataset_id == i else m.model_copy(update={"dataset_id": i})
            for i, m in zip(ids, manifests, strict=True) if m is not None], trained


class DatasetItem(BaseModel):
    dataset_id: str = Field(description="The set's id: `dataset_id` when starting a "
                            "training; `DELETE /api/training/datasets/{id}` deletes it.",
                            examples=["fa0e003c5d9b4e7e8a1f2b3c4d5e6f70"])
    created_at: datetime = Field(description="When it was uploaded (retention counts from "
                                 "then).")
    image_count: int = Field(description="Photos kept in it.", examples=[12])
    models: list[DatasetModel] = Field(description="Your models trained on it, with their "
                                       "status.")


class DatasetPage(Page[DatasetItem]):
    """A page of the caller's photo sets, newest first."""


@mine.get("/datasets", response_model=DatasetPage)
async def list_my_datasets(caller: CurrentUser, storage: Storage, models: Models,
                           paging: Paging) -> DatasetPage:
    """Your photo sets, newest first, a page at a time, each with the models trained on
    it. (`GET /api/training/datasets` gives them all at once.)"""
    manifests, trained = await _sets_of(caller.user_id, storage, models)
    shown, next_cursor = paging.page(
        manifests, lambda m: Position(m.created_at, m.dataset_id),
        Scope("datasets", caller.user_id))
    return DatasetPage(items=[DatasetItem(
        dataset_id=manifest.dataset_id, created_at=manifest.created_at,
        image_count=len(manifest.images),
        models=_trained_on(trained, manifest.dataset_id))
        for manifest in shown], next_cursor=next_cursor)


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
