"""Image generation: request, cancel, list and download the caller's images."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.base import utcnow
from contracts.generation import (
    MAX_SIDE,
    MIN_SIDE,
    MODEL_DEFAULTS,
    SIDE_MULTIPLE,
    BaseModelName,
    DeleteImage,
    GenerateImage,
    GenerationQueued,
)
from contracts.ids import Id, new_id
from contracts.jobs import JobKind, JobState
from contracts.prompt import PROMPT_MAX_CHARS
from contracts.topology import GENERATION_COMMANDS, GENERATION_WORKERS
from contracts.training import ModelStatus
from gateway.commands import (
    announce_queued,
    ask_owner,
    cancel_job,
    deduplicated_if_sent_again,
    job_id_for,
    send,
)
from gateway.deps import CurrentUser, Runtime
from gateway.downloads import download_url, refused
from gateway.problems import Problem
from gateway.runtime import GatewayRuntime
from terra.errors import ObjectMissing
from terra.nats.queues import commands_waiting

router = APIRouter(prefix="/api/generate", tags=["generation"])
images = APIRouter(prefix="/api/images", tags=["generation"])

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


class Queued(BaseModel):
    job_id: str
    queue_position: int
    model: str
    lora_id: str | None


@router.post("/image", status_code=status.HTTP_202_ACCEPTED, response_model=Queued)
async def generate(
    body: GenerateBody, caller: CurrentUser, runtime: Runtime,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Queued:
    """Queue a generation. A retry with the same `Idempotency-Key` (after a 503, or after
    an answer that was lost) names the same job and answers 202 with it: it never runs twice."""
    model, lora_id = await _resolve_model(runtime, caller.user_id, body)
    defaults = MODEL_DEFAULTS[model]
    job_id = job_id_for(caller.user_id, idempotency_key) or new_id()
    accepted = Queued(job_id=job_id, queue_position=0, model=model.value, lora_id=lora_id)
    known = await runtime.jobs.get(caller.user_id, job_id)
    if known is not None and not deduplicated_if_sent_again(known, GENERATION_COMMANDS):
        return accepted  # answered before; the job is on its way, running or over

    async def still_live(other: str) -> bool:
        job = await runtime.jobs.get(caller.user_id, other, JobKind.GENERATION)
        return job is not None and not job.status.is_terminal

    cap = runtime.settings.max_generations_per_user
    if not await runtime.generation_slots.claim(caller.user_id, job_id, cap, still_live):
        raise Problem(429, "too-many-jobs", f"You have {cap} generations queued or running; "
                      "wait for one to finish.", headers={"Retry-After": "5"})
    await runtime.jobs.create(JobState(job_id=job_id, user_id=caller.user_id,
                                       kind=JobKind.GENERATION))
    # Commands ahead of this one, counted before it is sent: nothing that can fail is left
    # between the command's publish and the answer. An estimate: the worker's position
    # frames give the fair one.
    ahead = await commands_waiting(runtime.js, GENERATION_WORKERS)
    command = GenerateImage(
        message_id=job_id, job_id=job_id, user_id=caller.user_id, prompt=body.prompt,
        model=model, lora_id=lora_id, lora_scale=body.lora_scale, width=body.width,
        height=body.height, steps=body.steps or defaults["steps"],
        guidance=body.guidance if body.guidance is not None else defaults["guidance"],
        seed=body.seed if body.seed is not None else secrets.randbelow(2**32),
        num_images=body.num_images,
    )
    await send(runtime.broker, command, timeout_s=runtime.settings.nats_request_timeout_s)
    await announce_queued(runtime.events, GenerationQueued(
        message_id=f"{job_id}-queued", user_id=caller.user_id, job_id=job_id,
        position=ahead, correlation_id=command.correlation_id), known)
    return accepted.model_copy(update={"queue_position": ahead})


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel(job_id: Id, caller: CurrentUser, runtime: Runtime) -> dict[str, str]:
    return await cancel_job(runtime, caller.user_id, job_id, JobKind.GENERATION)


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
async def download(user_id: Id, caller: CurrentUser, runtime: Runtime) -> list[ImageView]:
    """Your images, newest first: `url` through the gateway, `download_url` presigned for
    15 minutes. Another user's id is not found; a record naming a key that is not yours
    is left out (and logged)."""
    if user_id != caller.user_id:
        raise Problem(404, "not-found", f"No images for user {user_id}.")
    records = await runtime.images.list(caller.user_id)  # bounded: TimeoutError is a 503
    return [
        ImageView(image_id=r.image_id, job_id=r.job_id, width=r.width, height=r.height,
                  seed=r.seed, prompt=r.prompt, model=r.model.value,
                  created_at=r.created_at.isoformat(), expires_at=r.expires_at.isoformat(),
                  url=f"/api/images/{r.image_id}", download_url=url)
        for r in records
        if r.expires_at > utcnow()  # the sweep deletes them soon; never offer them
        and (url := await download_url(runtime, caller.user_id, r.key)) is not None
    ]


@images.get("/{image_id}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def get_image(image_id: Id, caller: CurrentUser, runtime: Runtime) -> Response:
    record = await runtime.images.get(caller.user_id, image_id)
    if (record is None or record.expires_at <= utcnow()
            or refused(caller.user_id, record.key)):
        raise Problem(404, "not-found", f"No image {image_id}.")
    try:
        data = await runtime.storage.get_bytes(record.key)
    except ObjectMissing as exc:  # gone with its deletion or the sweep: not a fault
        raise Problem(404, "not-found", f"No image {image_id}.") from exc
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@images.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={202: {"description": "Being deleted (it took longer than usual)."}})
async def delete_image(image_id: Id, caller: CurrentUser, runtime: Runtime) -> Response:
    """generator_service, which owns images, deletes the file and the record."""
    record = await runtime.images.get(caller.user_id, image_id)
    if record is None:
        raise Problem(404, "not-found", f"No image {image_id}.")
    return await ask_owner(runtime, caller.user_id,
                           DeleteImage(user_id=caller.user_id, image_id=image_id),
                           done="generation.image_deleted.v1", about="image_id", value=image_id)


async def _resolve_model(runtime: GatewayRuntime, user_id: str,
                         body: GenerateBody) -> tuple[BaseModelName, str | None]:
    """auto: dev with the user's newest ready LoRA, else schnell; a named LoRA must be the
    caller's and ready."""
    if body.lora_id is not None:
        record = await runtime.models.get(user_id, body.lora_id)
        if record is None:
            raise Problem(404, "not-found", f"No model {body.lora_id}.")
        if record.status is not ModelStatus.READY:
            raise Problem(409, "conflict", f"Model {body.lora_id} is {record.status.value}.")
        return BaseModelName.DEV, record.model_id
    if body.model == "auto":
        ready = [m for m in await runtime.models.list(user_id) if m.status is ModelStatus.READY]
        if ready:
            return BaseModelName.DEV, ready[0].model_id
        return BaseModelName.SCHNELL, None
    return BaseModelName(body.model), None
