"""Use cases of trainer_service: run a training, cancel one, erase a deleted account.

A training is long, so the worker keeps its command alive with heartbeats, saves
checkpoints to object storage, and on a redelivery (a crashed worker) resumes from the
last one. Every end (completed, cancelled, failed) is written once: the job's revision-
checked state decides, and events carry message ids derived from the job.
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

from contracts.base import utcnow
from contracts.jobs import CancelJob, FailureCode, JobError, JobFailed, JobKind, JobState, JobStatus
from contracts.training import (
    ModelStatus,
    StartTraining,
    TrainingCancelled,
    TrainingCompleted,
    TrainingProgressed,
    TrainingSampleReady,
    TrainingStarted,
)
from terra.events import EventPublisher
from terra.jobs import InvalidTransition, JobStore
from terra.models import ModelStore
from terra.worker import PermanentFailure
from trainer_service import errors
from trainer_service.config import TrainerSettings
from trainer_service.flux import base_model_name, load_flux_pipeline
from trainer_service.preprocess import prepare_examples
from trainer_service.sampling import generate_samples, sample_prompts
from trainer_service.store import TrainingStore
from trainer_service.training import TrainingCallbacks, TrainingConfig, TrainingResult, train_lora

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRef:
    """What the endings of a training need to know about it."""

    job_id: str
    user_id: str
    model_id: str
    correlation_id: str

    @classmethod
    def of(cls, command: StartTraining) -> JobRef:
        return cls(command.job_id, command.user_id, command.model_id, command.correlation_id)

TINY_RESOLUTION = 256  # what the tiny random FLUX trains at, whatever is asked


@dataclass
class TrainerHandlers:
    settings: TrainerSettings
    jobs: JobStore
    models: ModelStore
    events: EventPublisher
    store: TrainingStore

    # --- start ----------------------------------------------------------------------------

    async def start(self, command: StartTraining, heartbeat: Callable[[], Awaitable[None]]) -> None:
        job = await self.jobs.get(command.job_id)
        if job is None:
            await self.jobs.create(JobState(job_id=command.job_id, user_id=command.user_id,
                                            kind=JobKind.TRAINING,
                                            result={"model_id": command.model_id}))
            job = await self.jobs.get(command.job_id)
        if job.user_id != command.user_id or job.status.is_terminal:
            return  # finished before (a redelivery) or cancelled while queued
        images = await self.store.load_dataset(command.user_id, command.dataset_id)
        if images is None:
            await self._fail(JobRef.of(command), FailureCode.NOT_FOUND,
                             "The photo set no longer exists.")
            raise PermanentFailure("dataset missing")
        checkpoint = await self.store.latest_checkpoint(command.user_id, command.model_id)
        resumed_from = checkpoint[0] if checkpoint else 0
        await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
            "status": JobStatus.RUNNING,
            "detail": f"resuming from step {resumed_from}" if resumed_from else "training"}))
        await self.events.publish(TrainingStarted(
            message_id=f"{command.job_id}-started-{resumed_from}", user_id=command.user_id,
            job_id=command.job_id, model_id=command.model_id, resumed_from_step=resumed_from,
            correlation_id=command.correlation_id))

        run = _Run(self, command, asyncio.get_running_loop())
        watchers = [asyncio.create_task(run.keep_alive(heartbeat)),
                    asyncio.create_task(run.watch_for_cancel())]
        try:
            result = await asyncio.to_thread(run.train, images,
                                             checkpoint[1] if checkpoint else None)
        except errors.TrainingCancelled as cancelled:
            await self._cancelled(JobRef.of(command), f"cancelled after step {cancelled.step}")
            return
        except torch.OutOfMemoryError as exc:
            await self._fail(JobRef.of(command), FailureCode.OUT_OF_MEMORY,
                             "The GPU ran out of memory while loading the model; set "
                             "TERRA_QUANTIZE_BASE or use a larger card.")
            raise PermanentFailure(str(exc)) from exc
        except (errors.OutOfGpuMemory, errors.DatasetError, errors.CheckpointError) as exc:
            code = (FailureCode.OUT_OF_MEMORY if isinstance(exc, errors.OutOfGpuMemory)
                    else FailureCode.INVALID_INPUT)
            await self._fail(JobRef.of(command), code, str(exc))
            raise PermanentFailure(str(exc)) from exc
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        await self._complete(command, result, run.resolution)

    async def _complete(self, command: StartTraining, result: TrainingResult,
                        resolution: int) -> None:
        try:
            samples = await asyncio.to_thread(self._samples, command, result, resolution)
        except torch.OutOfMemoryError:
            log.warning("no samples: out of GPU memory", extra={"job_id": command.job_id})
            samples = []  # the LoRA is what was asked for; samples are a bonus
        lora_key, sample_keys = await self.store.save_result(
            command.user_id, command.model_id, result.lora,
            {**result.metadata, "dataset_id": command.dataset_id, "job_id": command.job_id,
             "created_at": utcnow().isoformat()},
            samples)
        await self.models.update(command.user_id, command.model_id, lambda m: m.model_copy(
            update={"status": ModelStatus.READY, "lora_key": lora_key,
                    "sample_image_keys": sample_keys,
                    "base_model": base_model_name(self.settings.base_model)}))
        sample_ids = [f"{command.model_id}-sample-{i}" for i in range(len(sample_keys))]
        for image_id, key in zip(sample_ids, sample_keys, strict=True):
            await self.events.publish(TrainingSampleReady(
                message_id=f"{image_id}-ready", user_id=command.user_id,
                job_id=command.job_id, step=command.steps, image_id=image_id, image_key=key,
                correlation_id=command.correlation_id))
        final_loss = result.losses[-1] if result.losses else None
        await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
            "status": JobStatus.SUCCEEDED, "progress": 1.0, "detail": "completed",
            "result": {**s.result, "model_id": command.model_id, "lora_key": lora_key,
                       "sample_image_keys": sample_keys, "final_loss": final_loss}}))
        await self.events.publish(TrainingCompleted(
            message_id=f"{command.job_id}-completed", user_id=command.user_id,
            job_id=command.job_id, model_id=command.model_id,
            trigger_word=command.trigger_word, lora_key=lora_key,
            sample_image_ids=sample_ids, sample_image_keys=sample_keys,
            correlation_id=command.correlation_id))
        await self.models.release_active(command.user_id, command.job_id)
        await self.store.drop_checkpoints(command.user_id, command.model_id)

    def _samples(self, command: StartTraining, result: TrainingResult, resolution: int):
        pipeline = load_flux_pipeline(self.settings.base_model, "cpu", self.dtype)
        if self.device.type == "cuda":
            pipeline.enable_model_cpu_offload(device=self.device)  # one component at a time
        steps = 2 if self.settings.base_model is None else 28
        return generate_samples(pipeline, result.lora,
                                sample_prompts(command.trigger_word, self.settings.samples),
                                height=resolution, width=resolution, num_inference_steps=steps)

    # --- cancel ---------------------------------------------------------------------------

    async def cancel(self, command: CancelJob) -> None:
        job = await self.jobs.get(command.job_id)
        if job is None or job.user_id != command.user_id or job.status.is_terminal:
            return
        if job.status is JobStatus.QUEUED:
            # Nobody runs it yet: cancelled now; the worker that meets it later skips it.
            ref = JobRef(job.job_id, job.user_id, job.result["model_id"], command.correlation_id)
            await self._cancelled(ref, "cancelled while queued")
            return
        # Running: the worker holding it polls this flag and stops within a step.
        await self.jobs.update(command.job_id,
                               lambda s: s.model_copy(update={"cancel_requested": True}))

    # --- endings --------------------------------------------------------------------------

    async def _cancelled(self, command: JobRef, detail: str) -> None:
        try:
            await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
                "status": JobStatus.CANCELLED, "detail": detail}))
        except InvalidTransition:  # it ended another way first
            log.info("cancel came too late", extra={"job_id": command.job_id})
            return
        await self._model_failed(command)
        await self.events.publish(TrainingCancelled(
            message_id=f"{command.job_id}-cancelled", user_id=command.user_id,
            job_id=command.job_id, model_id=command.model_id,
            correlation_id=command.correlation_id))

    async def _fail(self, command: JobRef, code: FailureCode, reason: str) -> None:
        job = await self.jobs.get(command.job_id)
        if job is None or job.status.is_terminal:
            return
        await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
            "status": JobStatus.FAILED, "error": JobError(code=code, reason=reason)}))
        await self._model_failed(command)
        await self.events.publish(JobFailed(
            message_id=f"{command.job_id}-failed", user_id=command.user_id,
            job_id=command.job_id, kind=JobKind.TRAINING, code=code, reason=reason,
            correlation_id=command.correlation_id))

    async def _model_failed(self, command: JobRef) -> None:
        """Nothing half-registered: the model is marked failed, its files and slot freed."""
        with contextlib.suppress(KeyError):
            await self.models.update(command.user_id, command.model_id,
                                     lambda m: m.model_copy(update={"status": ModelStatus.FAILED}))
        await self.store.drop_checkpoints(command.user_id, command.model_id)
        await self.models.release_active(command.user_id, command.job_id)

    async def dead_letter(self, body: bytes) -> None:
        try:
            command = StartTraining.model_validate_json(body)
        except ValueError:
            log.error("undecodable training command dropped")
            return
        await self._fail(JobRef.of(command), FailureCode.DELIVERY_EXHAUSTED,
                         "The training failed several times; it has been stopped.")

    async def erase_account(self, user_id: str) -> None:
        erased = await self.store.erase_user(user_id)
        for record in await self.models.list(user_id):
            await self.models.delete(user_id, record.model_id)
        log.info("account erased", extra={"user_id": user_id, "objects": erased})

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.train_device)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.settings.train_dtype)


class _Run:
    """One training in progress: the bridge between the training thread and the loop."""

    def __init__(self, handlers: TrainerHandlers, command: StartTraining,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.handlers = handlers
        self.command = command
        self.loop = loop
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
        asyncio.run_coroutine_threadsafe(
            self.handlers.store.save_checkpoint(self.command.user_id, self.command.model_id,
                                                step, data), self.loop).result(timeout=300)

    async def progress(self, step: int, total: int, loss: float, eta: float | None) -> None:
        command = self.command
        await self.handlers.events.publish(TrainingProgressed(
            message_id=f"{command.job_id}-progress-{step}", user_id=command.user_id,
            job_id=command.job_id, step=step, total_steps=total,
            loss=loss if math.isfinite(loss) else None, eta_seconds=eta,
            correlation_id=command.correlation_id))
        await self.handlers.jobs.update(command.job_id, lambda s: s.model_copy(update={
            "progress": min(step / total, 0.99)}) if not s.status.is_terminal else s)

    async def keep_alive(self, heartbeat: Callable[[], Awaitable[None]]) -> None:
        """`in_progress()` well within ack_wait, so a live job is never redelivered."""
        while True:
            await asyncio.sleep(self.handlers.settings.heartbeat_s)
            await heartbeat()

    async def watch_for_cancel(self) -> None:
        while not self.cancel.is_set():
            await asyncio.sleep(self.handlers.settings.cancel_poll_s)
            job = await self.handlers.jobs.get(self.command.job_id)
            if job is not None and job.cancel_requested:
                self.cancel.set()
