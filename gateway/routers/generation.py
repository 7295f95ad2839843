"""Image generation: request, cancel, list and download the caller's images."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.base import utcnow
from contracts.generation import MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE, DeleteImage
from contracts.ids import Id
from contracts.jobs import JobKind
from contracts.prompt import PROMPT_MAX_CHARS
from gateway.admission.generation import GenerationAdmission, GenerationRequest
from gateway.commands import cancel_job
from gateway.deps import (
    Commands,
    CurrentUser,
    Images,
    Jobs,
    Storage,
    generation_admission,
)
from gateway.downloads import download_url, refused
from gateway.listing import PRESIGNED_FOR, Page, Paging, Position, Scope, filters
from gateway.problems import Problem
from gateway.routers import deleted_or_deleting
from terra.errors import ObjectMissing

router = APIRouter(prefix="/api/generate", tags=["generation"])
images = APIRouter(prefix="/api/images", tags=["generation"])
mine = APIRouter(prefix="/api/me", tags=["generation"])

Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_MULTIPLE)]


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                             max_length=PROMPT_MAX_CHARS)]
    model: Literal["auto", "schnell", "dev"] = Field(
        default="auto", description="auto: dev with your newest LoRA if you have one, else "
        "schnell.")
    lora_id: Id | None = None
    lora_scale: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    width: Side = 1024
    height: Side = 1024
    steps: Annotated[int, Field(ge=1, le=100)] | None = None
    guidance: Annotated[float, Field(ge=0.0, le=20.0)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    num_images: Annotated[int, Field(ge=1, le=4)] = 1

    @model_validator(mode="after")
    def _lora_needs_dev(self) -> GenerateBody:
        if self.lora_id is not None and self.model == "schnell":
            raise ValueError("a personal LoRA is trained on FLUX.1-dev: use model dev or auto")
        return self


# The answer to a queued generation, named as the public API schema it is.
class Queued(BaseModel):
    job_id: str
    queue_position: int
    model: str
    lora_id: str | None


@router.post("/image", status_code=status.HTTP_202_ACCEPTED, response_model=Queued)
async def generate(
    body: GenerateBody, caller: CurrentUser,
    admission: Annotated[GenerationAdmission, Depends(generation_admission)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Queued:
    """Queue a generation. A retry with the same `Idempotency-Key` (after a 503, or after
    an answer that was lost) names the same job and answers 202 with it: it never runs twice."""
    admitted = await admission.admit(caller.user_id, GenerationRequest(
        **body.model_dump(), idempotency_key=idempotency_key))
    return Queued(job_id=admitted.job_id, queue_position=admitted.queue_position,
                  model=admitted.model.value, lora_id=admitted.lora_id)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel(job_id: Id, caller: CurrentUser, jobs: Jobs,
                 commands: Commands) -> dict[str, str]:
    """Stop a queued or running generation; `generation.cancelled.v1` follows."""
    await cancel_job(jobs, commands, caller.user_id, job_id, JobKind.GENERATION)
    return {"job_id": job_id, "status": "cancel_requested"}


class ImageView(BaseModel):
    image_id: str
    job_id: str
    width: int
    height: int
    seed: int
    prompt: str
    model: str
    created_at: str
    expires_at: str
    url: str
    download_url: str


@router.get("/download/{user_id}", response_model=list[ImageView])
async def download(user_id: Id, caller: CurrentUser, image_store: Images,
                   storage: Storage) -> list[ImageView]:
    """Your images, newest first: `url` through the gateway, `download_url` presigned for
    15 minutes. Another user's id is not found; a record naming a key that is not yours
    is left out (and logged)."""
    if user_id != caller.user_id:
        raise Problem(404, "not-found", f"No images for user {user_id}.")
    records = await image_store.list(caller.user_id)  # bounded: TimeoutError is a 503
    return [
        ImageView(image_id=r.image_id, job_id=r.job_id, width=r.width, height=r.height,
                  seed=r.seed, prompt=r.prompt, model=r.model.value,
                  created_at=r.created_at.isoformat(), expires_at=r.expires_at.isoformat(),
                  url=f"/api/images/{r.image_id}", download_url=url)
        for r in records
        if r.expires_at > utcnow()  # the sweep deletes them soon; never offer them
        and (url := await download_url(storage, caller.user_id, r.key)) is not None
    ]


@images.get("/{image_id}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def get_image(image_id: Id, caller: CurrentUser, image_store: Images,
                    storage: Storage) -> Response:
    """One of your images, as a PNG, until it expires."""
    record = await image_store.get(caller.user_id, image_id)
    if (record is None or record.expires_at <= utcnow()
            or refused(caller.user_id, record.key)):
        raise Problem(404, "not-found", f"No image {image_id}.")
    try:
        data = await storage.get_bytes(record.key)
    except ObjectMissing as exc:  # gone with its deletion or the sweep: not a fault
        raise Problem(404, "not-found", f"No image {image_id}.") from exc
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@images.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={202: {"description": "Being deleted (it took longer than usual)."}})
async def delete_image(image_id: Id, caller: CurrentUser, image_store: Images,
                       commands: Commands) -> Response:
    """generator_service, which owns images, deletes the file and the record."""
    record = await image_store.get(caller.user_id, image_id)
    if record is None:
        raise Problem(404, "not-found", f"No image {image_id}.")
    _, event = await commands.send_and_wait(
        caller.user_id, DeleteImage(user_id=caller.user_id, image_id=image_id),
        {"generation.image_deleted.v1"}, about="image_id", value=image_id)
    return deleted_or_deleting(event, "image_id", image_id)


class ImageItem(BaseModel):
    image_id: str = Field(description="The image's id (`GET` or `DELETE "
                          "/api/images/{image_id}`).",
                          examples=["7699b6c1e4a84f0c9a2d8c1f0b3e5a77-0"])
    job_id: str = Field(description="The generation that made it.")
    width: int = Field(description="In pixels.", examples=[1024])
    height: int = Field(description="In pixels.", examples=[1024])
    seed: int = Field(description="The seed it was made with (the same request and seed "
                      "make it again).", examples=[7])
    prompt: str = Field(description="The prompt it was made from.")
    model: str = Field(description="The base model: schnell or dev.", examples=["schnell"])
    lora_id: str | None = Field(description="Your model it was made with, if any.")
    created_at: datetime = Field(description="When it was made.")
    expires_at: datetime = Field(description="When it is deleted (image retention); it is "
                                 "never listed or served after.")
    url: str = Field(description="The PNG through the gateway, with your access token.",
                     examples=["/api/images/7699b6c1e4a84f0c9a2d8c1f0b3e5a77-0"])
    download_url: str = Field(description="A presigned GET of the PNG (S3, no token "
                              "needed), until `download_url_expires_at`.")
    download_url_expires_at: datetime = Field(
        description="When `download_url` stops working; list again for a fresh one.",
        examples=["2026-11-25T20:12:21.620648Z"])


class ImagePage(Page[ImageItem]):
    """A page of the caller's images, newest first."""


@mine.get("/images", response_model=ImagePage)
async def list_my_images(
    caller: CurrentUser, image_store: Images, storage: Storage, paging: Paging,
    job_id: Annotated[Id | None, Query(description="Only the images of this "
                                       "generation.")] = None,
) -> ImagePage:
    """Your images, newest first, a page at a time, each with a presigned download URL and
    when it expires. (`GET /api/generate/download/{user_id}` gives them all at once.)"""
    now = utcnow()
    found = [record for record in await image_store.list(caller.user_id)
             if record.expires_at > now  # the sweep deletes them soon; never offer them
             and (job_id is None or record.job_id == job_id)
             and not refused(caller.user_id, record.key)]  # a damaged record: logged
    scope = Scope("images", caller.user_id, filters(job_id=job_id))
    shown, next_cursor = paging.page(
        found, lambda record: Position(record.created_at, record.image_id), scope)
    items = []
    for record in shown:
        signed_at = utcnow()
        items.append(ImageItem(
            image_id=record.image_id, job_id=record.job_id, width=record.width,
            height=record.height, seed=record.seed, prompt=record.prompt,
            model=record.model.value, lora_id=record.lora_id, created_at=record.created_at,
            expires_at=record.expires_at, url=f"/api/images/{record.image_id}",
            download_url=await storage.presigned_get(record.key, PRESIGNED_FOR),
            download_url_expires_at=signed_at + PRESIGNED_FOR))
    return ImagePage(items=items, next_cursor=next_cursor)
