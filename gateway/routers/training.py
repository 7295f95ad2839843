"""Training: upload photos, start, follow, cancel."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, File, Header, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.ids import Id, new_id
from contracts.jobs import JobKind, JobState
from contracts.topology import OBJECTS, TRAINING_COMMANDS, TRAINING_WORKERS
from contracts.training import (
    MAX_LORA_RANK,
    DatasetImage,
    DatasetManifest,
    ModelRecord,
    StartTraining,
    TrainingQueued,
)
from gateway import photos
from gateway.admission import _TRIGGER_LETTERS as TRIGGER_LETTERS
from gateway.admission import new_trigger_word, valid_trigger_word
from gateway.commands import (
    announce_queued,
    cancel_job,
    deduplicated_if_sent_again,
    job_id_for,
    send,
)
from gateway.deps import CurrentUser, Runtime
from gateway.problems import Problem
from gateway.runtime import GatewayRuntime
from terra.errors import ObjectMissing
from terra.nats.queues import commands_waiting

router = APIRouter(prefix="/api/training", tags=["training"])


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: Id
    trigger_word: str | None = Field(default=None, description="Leave out for a generated "
                                     "word that collides with nothing.")
    steps: Annotated[int, Field(ge=1, le=20000)] = 1000
    rank: Annotated[int, Field(ge=1, le=MAX_LORA_RANK)] = 16
    learning_rate: Annotated[float, Field(gt=0, le=1e-2)] = 1e-4
    resolution: Annotated[int, Field(ge=256, le=1536, multiple_of=64)] = 1024

    @field_validator("trigger_word")
    @classmethod
    def _one_token(cls, value: str | None) -> str | None:
        if value is not None and not valid_trigger_word(value):
            raise ValueError("use one word of 3 to 32 letters or digits")
        return value


class Started(BaseModel):
    job_id: str
    model_id: str
    trigger_word: str


class TrainingStatus(BaseModel):
    job_id: str
    model_id: str | None
    status: str
    progress: float
    detail: str | None
    error: dict | None
    result: dict
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, job: JobState) -> TrainingStatus:
        return cls(
            job_id=job.job_id, model_id=job.result.get("model_id"), status=job.status.value,
            progress=job.progress, detail=job.detail,
            error=job.error.model_dump() if job.error else None, result=job.result,
            created_at=job.created_at.isoformat(), updated_at=job.updated_at.isoformat(),
        )


async def load_manifest(runtime: GatewayRuntime, user_id: str,
                        dataset_id: str) -> DatasetManifest | None:
    """The dataset, or None when there is none; object storage not answering is raised
    (a 503), not mistaken for a missing dataset."""
    key = OBJECTS.upload_key(user_id, dataset_id, "manifest.json")
    try:
        return DatasetManifest.model_validate_json(await runtime.storage.get_bytes(key))
    except ObjectMissing:
        return None


class UploadedImage(BaseModel):
    id: str
    width: int
    height: int
    warnings: list[str]


class Uploaded(BaseModel):
    dataset_id: str
    images: list[UploadedImage]


@router.post("/upload", status_code=status.HTTP_201_CREATED, response_model=Uploaded)
async def upload(
    files: Annotated[list[UploadFile], File(description=f"{photos.MIN_IMAGES} to "
                                            f"{photos.MAX_IMAGES} photos of yourself")],
    caller: CurrentUser,
    runtime: Runtime,
) -> Uploaded:
    """Check every photo (content, size, decoding, duplicates) and store the set, or store
    nothing and say what is wrong with each rejected file."""
    if len(files) > photos.MAX_FILES_CHECKED:
        raise Problem(422, "invalid-upload", f"{len(files)} files; upload at most "
                      f"{photos.MAX_IMAGES}.")
    # One byte past the limit is enough to know a file is too large.
    received = [(f.filename or f"file-{i}", await f.read(photos.MAX_FILE_BYTES + 1))
                for i, f in enumerate(files)]
    verdict = await asyncio.to_thread(photos.check_upload, received)
    if not verdict.ok:
        raise Problem(422, "invalid-upload", f"{verdict.problem}.", rejected=[
            {"filename": r.filename, "reason": r.reason} for r in verdict.rejected])
    dataset_id = new_id()
    images = []
    for photo in verdict.photos:
        image_id = new_id()
        key = OBJECTS.upload_key(caller.user_id, dataset_id, f"{image_id}.jpg")
        await runtime.storage.put_bytes(key, photo.data, photo.content_type)
        images.append(DatasetImage(image_id=image_id, key=key, filename=photo.filename[:255],
                                   width=photo.width, height=photo.height,
                                   warnings=list(photo.warnings)))
    manifest = DatasetManifest(dataset_id=dataset_id, user_id=caller.user_id, images=images)
    # The manifest last: a dataset exists once it does, so a failure midway leaves none.
    await runtime.storage.put_bytes(OBJECTS.upload_key(caller.user_id, dataset_id,
                                                       "manifest.json"),
                                    manifest.model_dump_json().encode(), "application/json")
    return Uploaded(dataset_id=dataset_id, images=[
        UploadedImage(id=i.image_id, width=i.width, height=i.height, warnings=i.warnings)
        for i in images])


@router.post("/start", status_code=status.HTTP_202_ACCEPTED, response_model=Started)
async def start(
    body: StartBody, caller: CurrentUser, runtime: Runtime,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Started:
    """Queue a training. A retry with the same `Idempotency-Key` (after a 503, or after an
    answer that was lost) names the same job and model and answers 202 with them; the
    training runs once."""
    user_id = caller.user_id
    job_id = job_id_for(user_id, idempotency_key) or new_id()
    model_id = job_id_for(user_id, f"{idempotency_key}:model") if idempotency_key else new_id()
    trigger = body.trigger_word or (trigger_word_for(user_id, idempotency_key)
                                    if idempotency_key else new_trigger_word())
    known = await runtime.jobs.get(user_id, job_id)
    if known is not None and not deduplicated_if_sent_again(known, TRAINING_COMMANDS):
        return await _accepted(runtime, known, trigger)  # on its way, running or over
    if known is None and await load_manifest(runtime, user_id, body.dataset_id) is None:
        raise Problem(404, "not-found", f"No dataset {body.dataset_id}.")

    async def still_live(holder: str) -> bool:
        job = await runtime.jobs.get(user_id, holder, JobKind.TRAINING)
        return job is None or not job.status.is_terminal  # no record yet: being started

    # One running training per user: the claim is a create-if-absent, so two concurrent
    # starts cannot both win; a retry of this same job finds it ours. The trainer
    # releases it when the job ends.
    if not await runtime.models.claim_active(user_id, job_id, still_live):
        raise Problem(409, "training-running", "You already have a training running; wait "
                      "for it to finish or cancel it.")
    # Create-if-absent, so a retry finds what an interrupted attempt left and goes on.
    await runtime.models.create(ModelRecord(
        model_id=model_id, user_id=user_id, trigger_word=trigger, job_id=job_id,
        dataset_id=body.dataset_id, rank=body.rank, steps=body.steps))
    record = await runtime.models.get(user_id, model_id)
    trigger = record.trigger_word if record is not None else trigger
    # The gateway records what it accepted (queued); from then on the trainer owns the job.
    await runtime.jobs.create(JobState(job_id=job_id, user_id=user_id,
                                       kind=JobKind.TRAINING, result={"model_id": model_id}))
    # Trainings ahead of this one, counted before it is sent: nothing that can fail is
    # left between the command's publish and the answer.
    ahead = await commands_waiting(runtime.js, TRAINING_WORKERS)
    command = StartTraining(
        message_id=job_id, job_id=job_id, user_id=user_id, model_id=model_id,
        dataset_id=body.dataset_id, trigger_word=trigger, steps=body.steps, rank=body.rank,
        learning_rate=body.learning_rate, resolution=body.resolution,
    )
    await send(runtime.broker, command, timeout_s=runtime.settings.nats_request_timeout_s)
    await announce_queued(runtime.events, TrainingQueued(
        message_id=f"{job_id}-queued", user_id=user_id, job_id=job_id, model_id=model_id,
        position=max(0, ahead), correlation_id=command.correlation_id), known)
    return Started(job_id=job_id, model_id=model_id, trigger_word=trigger)


def trigger_word_for(user_id: str, idempotency_key: str) -> str:
    """The trigger word a keyed request gets when it names none: the same on every retry,
    so a retry answers the same body. Shaped like `new_trigger_word()`'s."""
    digest = hashlib.sha256(f"{user_id}\n{idempotency_key}:trigger".encode()).digest()
    return "".join(TRIGGER_LETTERS[byte % len(TRIGGER_LETTERS)] for byte in digest[:5])


async def _accepted(runtime: GatewayRuntime, job: JobState, trigger: str) -> Started:
    """The answer to a retry of a start that was accepted: from what it recorded."""
    model_id = job.result.get("model_id", "")
    record = await runtime.models.get(job.user_id, model_id) if model_id else None
    return Started(job_id=job.job_id, model_id=model_id,
                   trigger_word=record.trigger_word if record is not None else trigger)


@router.get("/status", response_model=list[TrainingStatus])
async def list_status(caller: CurrentUser, runtime: Runtime) -> list[TrainingStatus]:
    """Your trainings, newest first."""
    jobs = []
    for record in await runtime.models.list(caller.user_id):
        if record.job_id and (job := await runtime.jobs.get(caller.user_id, record.job_id,
                                                             JobKind.TRAINING)):
            jobs.append(job)
    jobs.sort(key=lambda job: job.created_at, reverse=True)
    return [TrainingStatus.of(job) for job in jobs]


@router.get("/status/{job_id}", response_model=TrainingStatus)
async def one_status(job_id: Id, caller: CurrentUser, runtime: Runtime) -> TrainingStatus:
    job = await runtime.jobs.get(caller.user_id, job_id, JobKind.TRAINING)
    if job is None or job.kind is not JobKind.TRAINING:
        raise Problem(404, "not-found", f"No training {job_id}.")
    return TrainingStatus.of(job)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel(job_id: Id, caller: CurrentUser, runtime: Runtime) -> dict[str, str]:
    return await cancel_job(runtime, caller.user_id, job_id, JobKind.TRAINING)

