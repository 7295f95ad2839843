"""The user's LoRA models: list (with sample images) and delete."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from contracts.ids import Id
from contracts.training import DeleteModel, ModelStatus
from gateway.deps import Commands, CurrentUser, Models, Storage
from gateway.downloads import download_url
from gateway.problems import Problem
from gateway.routers import deleted_or_deleting

router = APIRouter(prefix="/api/models", tags=["models"])


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
