"""Admitting a training: its photo set, the user's one training slot, the model record it
will fill, then its command; and the trigger words a model is called by."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from nats.js import JetStreamContext

from contracts.ids import new_id
from contracts.jobs import JobKind, JobState
from contracts.topology import TRAINING_COMMANDS, TRAINING_WORKERS
from contracts.training import ModelRecord, StartTraining, TrainingQueued
from gateway.commands import (
    CommandSender,
    announce_queued,
    deduplicated_if_sent_again,
    job_id_for,
)
from gateway.datasets import load_manifest
from gateway.refusals import DatasetNotFound, TrainingRunning
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.nats.queues import commands_waiting
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage

# Consonant-heavy and vowel-free: no common English or French word looks like this, so the
# trigger never collides with the words of a caption or a prompt.
TRIGGER_LETTERS = "bcdfghjklmnpqrstvwxz"


def new_trigger_word(length: int = 5) -> str:
    """A fresh trigger word such as "zqvkt" (plus a tail that tokenises rarely)."""
    return "".join(secrets.choice(TRIGGER_LETTERS) for _ in range(length))


def valid_trigger_word(word: str) -> bool:
    """One token of letters and digits, 3 to 32 characters."""
    return 3 <= len(word) <= 32 and word.isascii() and word.isalnum()


def trigger_word_for(user_id: str, idempotency_key: str) -> str:
    """The trigger word a keyed request gets when it names none: the same on every retry,
    so a retry answers the same body. Shaped like `new_trigger_word()`'s."""
    digest = hashlib.sha256(f"{user_id}\n{idempotency_key}:trigger".encode()).digest()
    return "".join(TRIGGER_LETTERS[byte % len(TRIGGER_LETTERS)] for byte in digest[:5])


@dataclass(frozen=True)
class TrainingRequest:
    """What the caller asks for, its fields already checked (the REST body's rules)."""

    dataset_id: str
    trigger_word: str | None  # None: a generated one
    steps: int
    rank: int
    learning_rate: float
    resolution: int
    idempotency_key: str | None = None  # a retry with the same key names the same job


@dataclass(frozen=True)
class TrainingAdmitted:
    job_id: str
    model_id: str
    trigger_word: str


class TrainingAdmission:
    def __init__(self, *, jobs: JobStore, models: ModelStore, storage: ObjectStorage,
                 commands: CommandSender, events: EventPublisher,
                 js: JetStreamContext) -> None:
        self.jobs = jobs  # read under the caller's id: another user's job finds nothing
        self.models = models
        self.storage = storage  # the photo sets
        self.commands = commands
        self.events = events  # a request's events: retried briefly through a broker fault
        self.js = js  # counts the trainings ahead

    async def admit(self, user_id: str, request: TrainingRequest) -> TrainingAdmitted:
        """Queue a training; a retry with the same idempotency key admits the same job and
        model, and the training runs once."""
        key = request.idempotency_key
        job_id = job_id_for(user_id, key) or new_id()
        model_id = job_id_for(user_id, f"{key}:model") if key else new_id()
        trigger = request.trigger_word or (trigger_word_for(user_id, key) if key
                                           else new_trigger_word())
        known = await self.jobs.get(user_id, job_id)
        if known is not None and not deduplicated_if_sent_again(known, TRAINING_COMMANDS):
            return await self._admitted_before(known, trigger)  # on its way, running or over
        if known is None and await load_manifest(self.storage, user_id,
                                                 request.dataset_id) is None:
            raise DatasetNotFound(request.dataset_id)

        async def still_live(holder: str) -> bool:
            job = await self.jobs.get(user_id, holder, JobKind.TRAINING)
            return job is None or not job.status.is_terminal  # no record yet: being started

        # One running training per user: the claim is a create-if-absent, so two concurrent
        # starts cannot both win; a retry of this same job finds it ours. The trainer
        # releases it when the job ends.
        if not await self.models.claim_active(user_id, job_id, still_live):
            raise TrainingRunning()
        # Create-if-absent, so a retry finds what an interrupted attempt left and goes on.
        await self.models.create(ModelRecord(
            model_id=model_id, user_id=user_id, trigger_word=trigger, job_id=job_id,
            dataset_id=request.dataset_id, rank=request.rank, steps=request.steps))
        record = await self.models.get(user_id, model_id)
        trigger = record.trigger_word if record is not None else trigger
        # The gateway records what it accepted (queued); from then on the trainer owns the job.
        await self.jobs.create(JobState(job_id=job_id, user_id=user_id,
                                        kind=JobKind.TRAINING, result={"model_id": model_id}))
        # Trainings ahead of this one, counted before it is sent: nothing that can fail is
        # left between the command's publish and the answer.
        ahead = await commands_waiting(self.js, TRAINING_WORKERS)
        command = StartTraining(
            message_id=job_id, job_id=job_id, user_id=user_id, model_id=model_id,
            dataset_id=request.dataset_id, trigger_word=trigger, steps=request.steps,
            rank=request.rank, learning_rate=request.learning_rate,
            resolution=request.resolution,
        )
        await self.commands.send(command)
        await announce_queued(self.events, TrainingQueued(
            message_id=f"{job_id}-queued", user_id=user_id, job_id=job_id, model_id=model_id,
            position=max(0, ahead), correlation_id=command.correlation_id), known)
        return TrainingAdmitted(job_id, model_id, trigger)

    async def _admitted_before(self, job: JobState, trigger: str) -> TrainingAdmitted:
        """The answer to a retry of a start that was admitted: from what it recorded."""
        model_id = job.result.get("model_id", "")
        record = await self.models.get(job.user_id, model_id) if model_id else None
        return TrainingAdmitted(job.job_id, model_id,
                                record.trigger_word if record is not None else trigger)
