"""Personal LoRA training on FLUX.1-dev."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from contracts.base import Command, Event, Model, utcnow
from contracts.ids import Id

# The LoRA contract between trainer_service (which writes LoRAs) and generator_service
# (which loads them, hot-swapped into a slot of exactly this rank when its transformer is
# compiled or quantized): the API's limit, the trainer's and the slot's are this one value.
# The ML kit owns these numbers (`fluxkit.lora.MAX_RANK`, `TARGET_MODULES`); this is the
# API's copy, since contracts import no ML code. tests/unit/test_fluxkit.py holds them equal.
MAX_LORA_RANK = 128
LORA_TARGET_MODULES: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")


class StartTraining(Command):
    domain: ClassVar[str] = "training"
    verb: ClassVar[str] = "start"
    type: Literal["training.start.v1"] = "training.start.v1"
    job_id: Id
    user_id: Id
    model_id: Id
    dataset_id: Id
    trigger_word: str = Field(min_length=1, max_length=64)
    steps: int = Field(default=1000, ge=1, le=20000)
    rank: int = Field(default=16, ge=1, le=MAX_LORA_RANK)
    learning_rate: float = Field(default=1e-4, gt=0, le=1e-2)
    resolution: int = Field(default=1024, ge=256, le=2048)


class TrainingQueued(Event):
    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "queued"
    type: Literal["training.queued.v1"] = "training.queued.v1"
    job_id: Id
    model_id: Id
    position: int | None = Field(default=None, ge=0)


class TrainingStarted(Event):
    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "started"
    type: Literal["training.started.v1"] = "training.started.v1"
    job_id: Id
    model_id: Id
    resumed_from_step: int = Field(default=0, ge=0, description="Always 0: a job starts "
                                   "once; a resumed one says `job.requeued.v1` with its "
                                   "`resumed_from_step`. Kept for older clients.")


class TrainingProgressed(Event):
    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "progressed"
    type: Literal["training.progressed.v1"] = "training.progressed.v1"
    job_id: Id
    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)
    loss: float | None = None
    eta_seconds: float | None = Field(default=None, ge=0)


class TrainingSampleReady(Event):
    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "sample"
    type: Literal["training.sample_ready.v1"] = "training.sample_ready.v1"
    job_id: Id
    step: int = Field(ge=0)
    image_id: Id
    image_key: str | None = Field(default=None, description="Object key of the PNG; "
                                  "GET /api/models lists a download URL for it.")


class TrainingCompleted(Event):
    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "completed"
    type: Literal["training.completed.v1"] = "training.completed.v1"
    job_id: Id
    model_id: Id
    trigger_word: str
    lora_key: str = Field(description="Object key of the LoRA safetensors.")
    sample_image_ids: list[Id] = Field(default_factory=list)
    sample_image_keys: list[str] = Field(default_factory=list)


class TrainingCancelled(Event):
    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "cancelled"
    type: Literal["training.cancelled.v1"] = "training.cancelled.v1"
    job_id: Id
    model_id: Id


class DeleteModel(Command):
    """Ask trainer_service, which owns models, to delete one (its files and record)."""

    domain: ClassVar[str] = "training"
    verb: ClassVar[str] = "delete_model"
    type: Literal["training.delete_model.v1"] = "training.delete_model.v1"
    user_id: Id
    model_id: Id


class ModelDeleted(Event):
    """A LoRA is gone: whoever holds it (the generators' adapter caches) lets it go now."""

    domain: ClassVar[str] = "training"
    name: ClassVar[str] = "model_deleted"
    type: Literal["training.model_deleted.v1"] = "training.model_deleted.v1"
    model_id: Id


class ModelStatus(StrEnum):
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ModelRecord(Model):
    """A user's LoRA, stored under its id in the models KV bucket by trainer_service."""

    type: Literal["training.model.v1"] = "training.model.v1"
    model_id: Id
    user_id: Id
    trigger_word: str = Field(min_length=1, max_length=64)
    base_model: str = "black-forest-labs/FLUX.1-dev"
    status: ModelStatus = ModelStatus.TRAINING
    lora_key: str | None = None
    job_id: Id | None = None
    dataset_id: Id | None = None
    rank: int | None = None
    steps: int | None = None
    sample_image_keys: list[str] = Field(default_factory=list)
    created_at: AwareDatetime = Field(default_factory=utcnow)


class DatasetImage(Model):
    image_id: Id
    key: str = Field(description="Object key of the normalised JPEG (metadata stripped).")
    filename: str = Field(max_length=255)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    warnings: list[str] = Field(default_factory=list)


class DatasetManifest(Model):
    """What an upload stored: written last, so a dataset without one does not exist."""

    type: Literal["training.dataset.v1"] = "training.dataset.v1"
    dataset_id: Id
    user_id: Id
    images: list[DatasetImage] = Field(min_length=1)
    created_at: AwareDatetime = Field(default_factory=utcnow)
