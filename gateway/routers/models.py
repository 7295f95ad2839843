"""The user's LoRA models: list (with sample images; all at once, or a page at a time)
and delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from contracts.base import utcnow
from contracts.ids import Id
from contracts.training import DeleteModel, ModelRecord, ModelStatus
from gateway.deps import Commands, CurrentUser, Models, Storage
from gateway.downloads import download_url
from gateway.listing import PRESIGNED_FOR, Page, Paging, Position, Scope, filters
from gateway.problems import Problem
from gateway.routers import deleted_or_deleting

router = APIRouter(prefix="/api/models", tags=["models"])
mine = APIRouter(prefix="/api/me", tags=["models"])


class ModelView(BaseModel):
    model_id: str
    status: str
    trigger_word: str
    base_model: str
    rank: int | None
    steps: int | None
    job_id: str | None
    created_at: str
    sample_urls: list[str]


@router.get("", response_model=list[ModelView])
async def list_models(caller: CurrentUser, models: Models, storage: Storage) -> list[ModelView]:
    """Your models, newest first; sample image URLs are valid for 15 minutes (a sample
    key that is not yours gets no URL, and is logged)."""
    views = []
    for record in await models.list(caller.user_id):
        views.append(ModelView(
            model_id=record.model_id, status=record.status.value,
            trigger_word=record.trigger_word, base_model=record.base_model, rank=record.rank,
            steps=record.steps, job_id=record.job_id, created_at=record.created_at.isoformat(),
            sample_urls=[url for key in record.sample_image_keys
                         if (url := await download_url(storage, caller.user_id, key))],
        ))
    return views


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={202: {"description": "Being deleted (it took longer than usual)."}})
async def delete_model(model_id: Id, caller: CurrentUser, models: Models,
                       commands: Commands) -> Response:
    """trainer_service, which owns models, deletes its files and record; the generators
    drop it from their caches at once."""
    record = await models.get(caller.user_id, model_id)
    if record is None:
        raise Problem(404, "not-found", f"No model {model_id}.")
    if record.status is ModelStatus.TRAINING:
        raise Problem(409, "conflict", "This model is still training; cancel the training "
                      "first.")
    _, event = await commands.send_and_wait(
        caller.user_id, DeleteModel(user_id=caller.user_id, model_id=model_id),
        {"training.model_deleted.v1"}, about="model_id", value=model_id)
    return deleted_or_deleting(event, "model_id", model_id)


class ModelItem(BaseModel):
    model_id: str = Field(description="The model's id: `lora_id` when generating, "
                          "`for_model` when optimising a prompt.",
                          examples=["7fc62897a1b04c65b5d7f3e2c9a81d40"])
    status: ModelStatus = Field(description="training, then ready; failed or cancelled "
                                "leave it without files.")
    trigger_word: str = Field(description="The word that brings you into a prompt.",
                              examples=["fvxgf"])
    base_model: str = Field(description="What it was trained on (the real base once the "
                            "training completes).",
                            examples=["black-forest-labs/FLUX.1-dev"])
    rank: int | None = Field(description="The LoRA's rank.", examples=[16])
    steps: int | None = Field(description="Training steps asked for.", examples=[1000])
    job_id: str | None = Field(description="The training job that made it.")
    dataset_id: str | None = Field(description="The photo set it was trained on.")
    created_at: datetime = Field(description="When its training was accepted.")
    sample_urls: list[str] = Field(description="Presigned GETs of its sample images (S3, "
                                   "no token needed), once it is ready.")
    sample_urls_expire_at: datetime | None = Field(
        description="When `sample_urls` stop working; list again for fresh ones. Null "
        "when there are none.", examples=["2026-11-25T20:12:21.620648Z"])


class ModelPage(Page[ModelItem]):
    """A page of the caller's models, newest first."""


@mine.get("/models", response_model=ModelPage)
async def list_my_models(
    caller: CurrentUser, models: Models, storage: Storage, paging: Paging,
    model_status: Annotated[list[ModelStatus], Query(
        alias="status", default_factory=list,
        description="Only models in these states (repeat it for several): `status=ready` "
        "for the ones you can generate with.")],
) -> ModelPage:
    """Your models, newest first, a page at a time, with presigned URLs of their samples.
    (`GET /api/models` gives them all at once.)"""
    found = await models.list(caller.user_id)
    if model_status:
        found = [record for record in found if record.status in model_status]
    scope = Scope("models", caller.user_id, filters(status=model_status))
    shown, next_cursor = paging.page(
        found, lambda record: Position(record.created_at, record.model_id), scope)
    return ModelPage(items=[await _item(record, caller.user_id, storage) for record in shown],
                     next_cursor=next_cursor)


async def _item(record: ModelRecord, user_id: str, storage: Storage) -> ModelItem:
    signed_at = utcnow()
    signed = [await download_url(storage, user_id, key, PRESIGNED_FOR)
              for key in record.sample_image_keys]
    urls = [url for url in signed if url is not None]  # a refused key: logged, left out
    return ModelItem(
        model_id=record.model_id, status=record.status, trigger_word=record.trigger_word,
        base_model=record.base_model, rank=record.rank, steps=record.steps,
        job_id=record.job_id, dataset_id=record.dataset_id, created_at=record.created_at,
        sample_urls=urls, sample_urls_expire_at=signed_at + PRESIGNED_FOR if urls else None)

