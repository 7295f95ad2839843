"""Admitting a generation: the model it runs on, the user's cap, then its command."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from nats.js import JetStreamContext

from contracts.generation import MODEL_DEFAULTS, BaseModelName, GenerateImage, GenerationQueued
from contracts.ids import new_id
from contracts.jobs import JobKind, JobState
from contracts.topology import GENERATION_COMMANDS, GENERATION_WORKERS
from contracts.training import ModelStatus
from gateway.commands import (
    CommandSender,
    announce_queued,
    deduplicated_if_sent_again,
    job_id_for,
)
from gateway.refusals import ModelNotFound, ModelNotReady, TooManyGenerations
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.nats.queues import commands_waiting
from terra.records.models import ModelStore


@dataclass(frozen=True)
class GenerationRequest:
    """What the caller asks for, its fields already checked (the REST body's rules)."""

    prompt: str
    model: str  # "auto" (dev with the newest ready LoRA, else schnell), "schnell" or "dev"
    lora_id: str | None
    lora_scale: float
    width: int
    height: int
    steps: int | None  # None: the model's default, as guidance
    guidance: float | None
    seed: int | None  # None: a random one
    num_images: int
    idempotency_key: str | None = None  # a retry with the same key names the same job


@dataclass(frozen=True)
class GenerationAdmitted:
    job_id: str
    queue_position: int  # commands ahead when it was sent (0 for a retry of a sent one)
    model: BaseModelName
    lora_id: str | None


class GenerationAdmission:
    def __init__(self, *, jobs: JobStore, models: ModelStore, slots: QueueSlots,
                 commands: CommandSender, events: EventPublisher, js: JetStreamContext,
                 cap: int) -> None:
        self.jobs = jobs  # read under the caller's id: another user's job finds nothing
        self.models = models
        self.slots = slots
        self.commands = commands
        self.events = events  # a request's events: retried briefly through a broker fault
        self.js = js  # counts the commands ahead
        self.cap = cap  # queued and running generations per user

    async def admit(self, user_id: str, request: GenerationRequest) -> GenerationAdmitted:
        """Queue a generation; a retry with the same idempotency key admits the same job,
        which never runs twice."""
        model, lora_id = await self._resolve_model(user_id, request)
        job_id = job_id_for(user_id, request.idempotency_key) or new_id()
        known = await self.jobs.get(user_id, job_id)
        if known is not None and not deduplicated_if_sent_again(known, GENERATION_COMMANDS):
            # Answered before; the job is on its way, running or over.
            return GenerationAdmitted(job_id, 0, model, lora_id)

        async def still_live(other: str) -> bool:
            job = await self.jobs.get(user_id, other, JobKind.GENERATION)
            return job is not None and not job.status.is_terminal

        if not await self.slots.claim(user_id, job_id, self.cap, still_live):
            raise TooManyGenerations(self.cap)
        await self.jobs.create(JobState(job_id=job_id, user_id=user_id,
                                        kind=JobKind.GENERATION))
        # Commands ahead of this one, counted before it is sent: nothing that can fail is
        # left between the command's publish and the answer. An estimate: the worker's
        # position frames give the fair one.
        ahead = await commands_waiting(self.js, GENERATION_WORKERS)
        command = _command(job_id, user_id, request, model, lora_id)
        await self.commands.send(command)
        await announce_queued(self.events, GenerationQueued(
            message_id=f"{job_id}-queued", user_id=user_id, job_id=job_id, position=ahead,
            correlation_id=command.correlation_id), known)
        return GenerationAdmitted(job_id, ahead, model, lora_id)

    async def _resolve_model(self, user_id: str,
                            request: GenerationRequest) -> tuple[BaseModelName, str | None]:
        """auto: dev with the user's newest ready LoRA, else schnell; a named LoRA must be
        the caller's and ready."""
        if request.lora_id is not None:
            record = await self.models.get(user_id, request.lora_id)
            if record is None:
                raise ModelNotFound(request.lora_id)
            if record.status is not ModelStatus.READY:
                raise ModelNotReady(request.lora_id, record.status)
            return BaseModelName.DEV, record.model_id
        if request.model == "auto":
            ready = [m for m in await self.models.list(user_id)
                     if m.status is ModelStatus.READY]
            if ready:
                return BaseModelName.DEV, ready[0].model_id
            return BaseModelName.SCHNELL, None
        return BaseModelName(request.model), None


def _command(job_id: str, user_id: str, request: GenerationRequest, model: BaseModelName,
             lora_id: str | None) -> GenerateImage:
    defaults = MODEL_DEFAULTS[model]
    return GenerateImage(
        message_id=job_id, job_id=job_id, user_id=user_id, prompt=request.prompt,
        model=model, lora_id=lora_id, lora_scale=request.lora_scale, width=request.width,
        height=request.height, steps=request.steps or defaults["steps"],
        guidance=request.guidance if request.guidance is not None else defaults["guidance"],
        seed=request.seed if request.seed is not None else secrets.randbelow(2**32),
        num_images=request.num_images,
    )
