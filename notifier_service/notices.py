"""What a notification says, taken once from the event that caused it (pure)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from contracts.ids import Id
from contracts.notifications import Notice, NotifyEvent


class _EventFields(BaseModel):
    """The fields of any ending the notice reads; the rest of the event is ignored."""

    model_config = ConfigDict(extra="ignore")

    message_id: Id
    user_id: Id
    occurred_at: str
    job_id: Id | None = None
    model_id: Id | None = None
    images: list[dict] = []
    sample_image_ids: list[Id] = []
    reason: str | None = None
    optimized: str | None = None


def deep_link(event: str, job_id: str | None, model_id: str | None,
              image_ids: list[str]) -> str:
    """The path the app opens: the new model, the first image, else the job."""
    if event == NotifyEvent.TRAINING_COMPLETED and model_id:
        return f"/models/{model_id}"
    if event == NotifyEvent.GENERATION_COMPLETED and image_ids:
        return f"/images/{image_ids[0]}"
    if job_id:
        return f"/jobs/{job_id}"
    return "/"


def notice_of(event: NotifyEvent, payload: bytes) -> Notice:
    """The notice of one event's JSON (`pydantic.ValidationError` when it is not one)."""
    fields = _EventFields.model_validate_json(payload)
    prompt = fields.optimized if event is NotifyEvent.PROMPT_OPTIMIZED else None
    image_ids = [image["image_id"] for image in fields.images if "image_id" in image]
    if event is NotifyEvent.TRAINING_COMPLETED:
        image_ids = list(fields.sample_image_ids)
    return Notice(
        event=event.value, event_id=fields.message_id, user_id=fields.user_id,
        occurred_at=fields.occurred_at, job_id=fields.job_id, model_id=fields.model_id,
        image_ids=image_ids, reason=fields.reason,
        deep_link=deep_link(event, fields.job_id, fields.model_id, image_ids),
        prompt=prompt[:4000] if prompt else None)
