"""Use cases of trainer_service: run a training, cancel one, erase a deleted account.

A training is long, so the worker keeps its command alive with heartbeats, saves
checkpoints to object storage, and on a redelivery (a crashed worker) resumes from the
last one. How a job starts, ends, retries and cancels is `terra.jobs.lifecycle`'s; what is
left here are the training's own steps, and the model record each ending leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import torch

from contracts.base import Event
from contracts.generation import MODEL_DEFAULTS, BaseModelName
from contracts.jobs import CancelJob, FailureCode, JobKind, JobState, JobStatus
from contracts.topology import OBJECTS
from contracts.training import (
    DeleteModel,
    ModelDeleted,
    ModelStatus,
    StartTraining,
    TrainingCancelled,
    TrainingCompleted,
    TrainingProgressed,
    TrainingQueued,
    TrainingSampleReady,
    TrainingStarted,
)
from fluxkit.loading import base_model_name, load_flux_pipeline
from fluxkit.placements import resolve_profile
from terra.jobs.lifecycle import JobFailure, JobLifecycle, JobRef
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.nats.faults import BROKER_ERRORS
from terra.records.models import ModelStore
from terra.runtime.worker import PermanentFailure
from trainer_service import errors
from trainer_service.config import TrainerSettings
from trainer_service.preprocess import prepare_examples
from trainer_service.sampling import generate_samples, sample_prompts
from trainer_service.store import TrainingStore
from trainer_service.training import TrainingCallbacks, TrainingConfig, TrainingResult, train_lora

log = logging.getLogger(__name__)

TINY_RESOLUTION = 256  # what the tiny random FLUX trains at, whatever is asked

# What each ending leaves on the model record.
MODEL_STATUS_AT_END = {
    JobStatus.SUCCEEDED: ModelStatus.READY,
    JobStatus.FAILED: ModelStatus.FAILED,
    JobStatus.CANCELLED: ModelStatus.CANCELLED,
}


class TrainingEvents:
    """The training domain's own events about a job (see `terra.jobs.lifecycle.JobEvents`)."""

    def queued(self, job: JobState) -> Event | None:
        return TrainingQueued(user_id=job.user_id, job_id=job.job_id,
                              model_id=job.result["model_id"])

    def started(self, job: JobState) -> Event | None:
        return TrainingStarted(user_id=job.user_id, job_id=job.job_id,
                               model_id=job.result["model_id"])

    def cancelled(self, job: JobState) -> Event:
        return TrainingCancelled(user_id=job.user_id, job_id=job.job_id,
                                 model_id=job.result["model_id"])


class TrainingCleanUp:
    """What every ending of a training leaves (the lifecycle's `on_end`, run again when a
    redelivery meets the ended job): the model record says how it ended, its checkpoints
    and the user's slot are freed."""

    def __init__(self, models: ModelStore, store: TrainingStore, base_model: str | None) -> None:
        self.models = models
        self.store = store
        self.base_model = base_model  # what a ready model records it was trained on

    async def __call__(self, job: JobState) -> None:
        model_id = job.result.get("model_id")
        if model_id is not None:
            update = {"status": MODEL_STATUS_AT_END[job.status]}
            if job.status is JobStatus.SUCCEEDED:
                update |= {"lora_key": job.result["lora_key"],
                           "sample_image_keys": job.result.get("sample_image_keys", []),
                           "base_model": base_model_name(self.base_model)}
            with contextlib.suppress(KeyError):  # deleted meanwhile (account erased)
                await self.models.update(job.user_id, model_id,
                                         lambda m: m.model_copy(update=update))
            await self.store.drop_checkpoints(job.user_id, model_id)
        await self.models.release_active(job.user_id, job.job_id)


@dataclass
class TrainerHandlers:
    settings: TrainerSettings
    lifecycle: JobLifecycle
    jobs: JobStore
    models: ModelStore
    events: EventPublisher
    store: TrainingStore

    # --- start ----------------------------------------------------------------------------

    async def start(self, command: StartTraining, delivery: int = 1,
                    heartbeat: Callable[[], Awaitable[None]] | None = None) -> None:
        ref = JobRef.of(command, JobKind.TRAINING)
        # The run's one read of the checkpoint pointer: it names the step resumed from,
        # and the run keeps track of the checkpoints it stores after that.
        kept = await self.store.checkpoint_step(command.user_id, command.model_id)
        job = await self.lifecycle.receive(ref, delivery, result={"model_id": command.model_id},
                                           resumed_from_step=kept)
        if job is not None:
            await self.lifecycle.attempt(ref, lambda: self._train(ref, command, heartbeat, kept))

    async def _train(self, ref: JobRef, command: StartTraining,
                     heartbeat: Callable[[], Awaitable[None]] | None, kept: int | None) -> None:
        images = await self.store.load_dataset(command.user_id, command.dataset_id)
        if images is None:
            raise JobFailure(FailureCode.NOT_FOUND, "The photo set no longer exists.")
        checkpoint = (None if kept is None else
                      await self.store.load_checkpoint(command.user_id, command.model_id, kept))
        if await self.lifecycle.begin(ref) is None:
            return  # cancelled or ended meanwhile
        run = _Run(self, command, asyncio.get_running_loop(), stored_step=kept)
        watchers = [asyncio.create_task(self.lifecycle.watch_for_cancel(
            ref, run.cancel, self.settings.cancel_poll_s))]
        if heartbeat is not None:
            watchers.append(asyncio.create_task(keep_alive(heartbeat, self.settings.heartbeat_s)))
        try:
            result = await asyncio.to_thread(run.train, images, checkpoint)
        except errors.StopRequested as stopped:
            await self.lifecycle.cancel(ref, f"cancelled after step {stopped.step}")
            return
        except torch.OutOfMemoryError as exc:
            raise JobFailure(FailureCode.OUT_OF_MEMORY, "The GPU ran out of memory while "
                             "loading the model; set TERRA_QUANTIZE_BASE or use a larger "
                             "card.") from exc
        except (errors.OutOfGpuMemory, errors.DatasetError, errors.CheckpointError) as exc:
            code = (FailureCode.OUT_OF_MEMORY if isinstance(exc, errors.OutOfGpuMemory)
                    else FailureCode.INVALID_INPUT)
            raise JobFailure(code, str(exc)) from exc
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        await self._complete(ref, command, result, run.resolution)

    async def _complete(self, ref: JobRef, command: StartTraining, result: TrainingResult,
                        resolution: int) -> None:
        if await self.lifecycle.account_gone(ref):
            return  # deleted while it trained: the LoRA is not kept
        try:
            samples = await asyncio.to_thread(self._samples, command, result, resolution)
        except torch.OutOfMemoryError:
            log.warning("no samples: out of GPU memory", extra={"job_id": command.job_id})
            samples = []  # the LoRA is what was asked for; samples are a bonus
        lora_key, sample_keys = await self.store.save_result(
            command.user_id, command.model_id, result.lora,
            {**result.metadata, "dataset_id": command.dataset_id, "job_id": command.job_id},
            samples)
        sample_ids = [f"{command.model_id}-sample-{i}" for i in range(len(sample_keys))]
        for image_id, key in zip(sample_ids, sample_keys, strict=True):
            await self.events.publish(TrainingSampleReady(
                message_id=f"{image_id}-ready", user_id=command.user_id,
                job_id=command.job_id, step=command.steps, image_id=image_id, image_key=key,
                correlation_id=command.correlation_id))
        await self.lifecycle.succeed(ref, TrainingCompleted(
            user_id=command.user_id, job_id=command.job_id, model_id=command.model_id,
            trigger_word=command.trigger_word, lora_key=lora_key,
            sample_image_ids=sample_ids, sample_image_keys=sample_keys), result={
            "model_id": command.model_id, "lora_key": lora_key,
            "sample_image_keys": sample_keys,
            "final_loss": result.losses[-1] if result.losses else None})

    def _samples(self, command: StartTraining, result: TrainingResult, resolution: int):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the training's cached blocks would read as used
        # The kit's placement table, as the generator's: the fastest unquantized placement
        # whose expected peak fits the free memory with one model resident.
        placement = resolve_profile("auto", self.device, resident_models=1, quantize=False,
                                    megapixels=resolution**2 / 2**20).placement
        pipeline = load_flux_pipeline(self.settings.base_model, "cpu", self.dtype)
        placement.apply(pipeline, self.device)
        steps = 2 if self.settings.base_model is None else int(MODEL_DEFAULTS[BaseModelName.DEV]["steps"])
        return generate_samples(pipeline, result.lora,
                                sample_prompts(command.trigger_word, self.settings.samples),
                                height=resolution, width=resolution, num_inference_steps=steps,
                                placement=placement, device=self.device)

    # --- endings, cancels, erasure -------------------------------------------------------------

    async def cancel(self, command: CancelJob) -> None:
        await self.lifecycle.request_cancel(command)

    async def dead_letter(self, body: bytes) -> None:
        await self.lifecycle.dead_letter_raw(body)

    async def delete_model(self, command: DeleteModel) -> None:
        """Its files, then its record, then the word that makes generators drop it
        (idempotent: a repeat says it again). A model still training is left alone."""
        record = await self.models.get(command.user_id, command.model_id)
        if record is not None and record.status is ModelStatus.TRAINING:
            raise PermanentFailure(f"model {command.model_id} is still training")
        await self.store.storage.delete_prefix(
            OBJECTS.model_key(command.user_id, command.model_id, ""))
        await self.models.delete(command.user_id, command.model_id)
        await self.events.publish(ModelDeleted(
            message_id=f"{command.model_id}-deleted", user_id=command.user_id,
            model_id=command.model_id, correlation_id=command.correlation_id))

    async def erase_account(self, user_id: str) -> None:
        """What training holds of a deleted account: photos, models (files and records;
        generators are told to drop each LoRA), its jobs and its training slot."""
        erased = await self.store.erase_user(user_id)
        for model_id in await self.models.erase(user_id):
            await self.events.publish(ModelDeleted(
                message_id=f"{model_id}-deleted", user_id=user_id, model_id=model_id))
        await self.models.forget_active(user_id)
        jobs = await self.jobs.erase(user_id, JobKind.TRAINING)
        log.info("account erased", extra={"user_id": user_id, "objects": erased, "jobs": jobs})

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.train_device)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.settings.train_dtype)


async def keep_alive(heartbeat: Callable[[], Awaitable[None]], every_s: float) -> None:
    """`in_progress()` well within ack_wait, so a live job is never redelivered. A beat
    lost to a broker fault is retried at the next one (ack_wait spans several)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await heartbeat()
        except BROKER_ERRORS as exc:
            log.warning("heartbeat failed", extra={"error": f"{type(exc).__name__}: {exc}"})


class _Run:
    """One training in progress: the bridge between the training thread and the loop."""

    def __init__(self, handlers: TrainerHandlers, command: StartTraining,
                 loop: asyncio.AbstractEventLoop, stored_step: int | None = None) -> None:
        self.handlers = handlers
        self.command = command
        self.loop = loop
        self.stored_step = stored_step  # the checkpoint in storage now, so no pointer read
        self.cancel = threading.Event()
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.last_emit = float("-inf")
        settings = handlers.settings
        asked = command.resolution
        if settings.base_model is None:
            asked = TINY_RESOLUTION
        self.resolution = min(asked, settings.max_resolution or asked)

    def train(self, images, checkpoint: bytes | None) -> TrainingResult:
        settings = self.handlers.settings
        # Loaded on the CPU: the encoders and then the transformer move to the device one
        # after another (a bf16 FLUX.1-dev would not fit a 24 GB card all at once).
        pipeline = load_flux_pipeline(settings.base_model, "cpu", self.handlers.dtype)
        examples = prepare_examples(images, self.command.trigger_word, self.resolution)
        config = TrainingConfig(
            trigger_word=self.command.trigger_word, steps=self.command.steps,
            rank=self.command.rank, learning_rate=self.command.learning_rate,
            resolution=self.resolution, gradient_checkpointing=settings.gradient_checkpointing,
            quantize_base=settings.quantize_base, checkpoint_every=settings.checkpoint_every,
            base_model=base_model_name(settings.base_model),
        )
        callbacks = TrainingCallbacks(on_step=self.on_step, should_stop=self.cancel.is_set,
                                      on_checkpoint=self.on_checkpoint)
        return train_lora(pipeline, examples, config, device=self.handlers.device,
                          dtype=self.handlers.dtype, callbacks=callbacks,
                          resume_from=checkpoint)

    # Called on the training thread.
    def on_step(self, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if self.first_step is None:
            self.first_step, self.started = step, now
        if now - self.last_emit < self.handlers.settings.progress_interval_s and step < total:
            return
        self.last_emit = now
        done = step - self.first_step
        eta = (now - self.started) / done * (total - step) if done > 0 else None
        asyncio.run_coroutine_threadsafe(self.progress(step, total, loss, eta), self.loop)

    def on_checkpoint(self, step: int, data: bytes) -> None:
        # Waits for the upload: a checkpoint counts once it is stored.
        asyncio.run_coroutine_threadsafe(self._keep_checkpoint(step, data),
                                         self.loop).result(timeout=300)

    async def _keep_checkpoint(self, step: int, data: bytes) -> None:
        command = self.command
        if await self.handlers.lifecycle.account_gone(JobRef.of(command, JobKind.TRAINING)):
            return  # deleted meanwhile: the watcher stops the run at its next look
        await self.handlers.store.save_checkpoint(command.user_id, command.model_id, step,
                                                  data, previous=self.stored_step)
        self.stored_step = step

    async def progress(self, step: int, total: int, loss: float, eta: float | None) -> None:
        command = self.command
        await self.handlers.lifecycle.progress(JobRef.of(command, JobKind.TRAINING),
                                               TrainingProgressed(
            message_id=f"{command.job_id}-progress-{step}", user_id=command.user_id,
            job_id=command.job_id, step=step, total_steps=total,
            loss=loss if math.isfinite(loss) else None, eta_seconds=eta,
            correlation_id=command.correlation_id), step / total)
