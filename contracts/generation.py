"""Image generation with FLUX.1-schnell, or FLUX.1-dev with a personal LoRA."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from contracts.base import Command, Event, Model, utcnow
from contracts.ids import Id
from contracts.prompt import PROMPT_MAX_CHARS


class BaseModelName(StrEnum):
    SCHNELL = "schnell"
    DEV = "dev"


class GenerateImage(Command):
    """A fully resolved generation request (the gateway has applied defaults)."""

    domain: ClassVar[str] = "generation"
    verb: ClassVar[str] = "generate"
    type: Literal["generation.generate.v1"] = "generation.generate.v1"
    job_id: Id
    user_id: Id
    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    model: BaseModelName
    lora_id: Id | None = None
    lora_scale: float = Field(default=1.0, ge=0.0, le=2.0)
    width: int = Field(default=1024, ge=256, le=2048, multiple_of=16)
    height: int = Field(default=1024, ge=256, le=2048, multiple_of=16)
    steps: int = Field(ge=1, le=100)
    guidance: float | None = Field(default=None, ge=0.0, le=20.0)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    num_images: int = Field(default=1, ge=1, le=4)


class GeneratedImage(Model):
    image_id: Id
    key: str = Field(description="Object key of the PNG.")
    width: int
    height: int
    seed: int


class GenerationQueued(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "queued"
    type: Literal["generation.queued.v1"] = "generation.queued.v1"
    job_id: Id
    position: int = Field(ge=0)


class GenerationQueuePositionChanged(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "position"
    type: Literal["generation.position_changed.v1"] = "generation.position_changed.v1"
    job_id: Id
    position: int = Field(ge=0)


class GenerationStarted(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "started"
    type: Literal["generation.started.v1"] = "generation.started.v1"
    job_id: Id


class GenerationProgressed(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "progressed"
    type: Literal["generation.progressed.v1"] = "generation.progressed.v1"
    job_id: Id
    step: int = Field(ge=0)
    total_steps: int = Field(ge=1)


class ImageGenerated(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "completed"
    type: Literal["generation.image_generated.v1"] = "generation.image_generated.v1"
    job_id: Id
    images: list[GeneratedImage] = Field(min_length=1)


class GenerationCancelled(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "cancelled"
    type: Literal["generation.cancelled.v1"] = "generation.cancelled.v1"
    job_id: Id


class DeleteImage(Command):
    """Ask generator_service, which owns images, to delete one (object and record)."""

    domain: ClassVar[str] = "generation"
    verb: ClassVar[str] = "delete_image"
    type: Literal["generation.delete_image.v1"] = "generation.delete_image.v1"
    user_id: Id
    image_id: Id


class ImageDeleted(Event):
    domain: ClassVar[str] = "generation"
    name: ClassVar[str] = "image_deleted"
    type: Literal["generation.image_deleted.v1"] = "generation.image_deleted.v1"
    image_id: Id


class ImageRecord(Model):
    """A generated image, under `<user_id>.<image_id>` in the images KV bucket."""

    type: Literal["generation.image.v1"] = "generation.image.v1"
    image_id: Id
    user_id: Id
    job_id: Id
    key: str
    width: int
    height: int
    seed: int
    prompt: str
    model: BaseModelName
    lora_id: Id | None = None
    created_at: AwareDatetime = Field(default_factory=utcnow)
    expires_at: AwareDatetime


# Limits of a request, shared by the gateway's validation and the worker's.
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 256, 2048, 16
MODEL_DEFAULTS: dict[BaseModelName, dict[str, float | int | None]] = {
    BaseModelName.SCHNELL: {"steps": 4, "guidance": None},
    BaseModelName.DEV: {"steps": 28, "guidance": 3.5},
}
