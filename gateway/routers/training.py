"""Training: upload photos, start, follow, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Header, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.ids import Id
from contracts.jobs import JobKind, JobState
from contracts.training import MAX_LORA_RANK
from gateway import photos
from gateway.admission.training import TrainingAdmission, TrainingRequest, valid_trigger_word
from gateway.commands import cancel_job
from gateway.datasets import store_dataset
from gateway.deps import Commands, CurrentUser, Jobs, Models, Storage, training_admission
from gateway.problems import Problem

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
    storage: Storage,
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
    manifest = await store_dataset(storage, caller.user_id, verdict.photos)
    return Uploaded(dataset_id=manifest.dataset_id, images=[
        UploadedImage(id=i.image_id, width=i.width, height=i.height, warnings=i.warnings)
        for i in manifest.images])


@router.post("/start", status_code=status.HTTP_202_ACCEPTED, response_model=Started)
async def start(
    body: StartBody, caller: CurrentUser,
    admission: Annotated[TrainingAdmission, Depends(training_admission)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Started:
    """Queue a training. A retry with the same `Idempotency-Key` (after a 503, or after an
    answer that was lost) names the same job and model and answers 202 with them; the
    training runs once."""
    admitted = await admission.admit(caller.user_id, TrainingRequest(
        **body.model_dump(), idempotency_key=idempotency_key))
    return Started(job_id=admitted.job_id, model_id=admitted.model_id,
                   trigger_word=admitted.trigger_word)


@router.get("/status", response_model=list[TrainingStatus])
async def list_status(caller: CurrentUser, models: Models,
                      jobs: Jobs) -> list[TrainingStatus]:
    """Your trainings, newest first."""
    found = []
    for record in await models.list(caller.user_id):
        if record.job_id and (job := await jobs.get(caller.user_id, record.job_id,
                                                     JobKind.TRAINING)):
            found.append(job)
    found.sort(key=lambda job: job.created_at, reverse=True)
    return [TrainingStatus.of(job) for job in found]


@router.get("/status/{job_id}", response_model=TrainingStatus)
async def one_status(job_id: Id, caller: CurrentUser, jobs: Jobs) -> TrainingStatus:
    """One of your trainings."""
    job = await jobs.get(caller.user_id, job_id, JobKind.TRAINING)
    if job is None or job.kind is not JobKind.TRAINING:
        raise Problem(404, "not-found", f"No training {job_id}.")
    return TrainingStatus.of(job)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel(job_id: Id, caller: CurrentUser, jobs: Jobs,
                 commands: Commands) -> dict[str, str]:
    """Stop a queued or running training; `training.cancelled.v1` follows."""
    await cancel_job(jobs, commands, caller.user_id, job_id, JobKind.TRAINING)
    return {"job_id": job_id, "status": "cancel_requested"}

