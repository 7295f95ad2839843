"""generator_service's use cases: a fair queue over held commands, one generation at a
time per worker, cancels, and erasing a deleted account's images.

A worker pulls up to `queue_window` commands and holds them unacked (heartbeats keep
them), serving users in turn (`FairQueue`); positions are published as they change. A
dead worker's commands return to the stream and another worker takes them; a job is
finished once (revision-checked job state, images and events keyed by the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from contracts.base import utcnow
from contracts.generation import (
    GeneratedImage,
    GenerateImage,
    GenerationCancelled,
    GenerationProgressed,
    GenerationQueued,
    GenerationQueuePositionChanged,
    GenerationStarted,
    ImageGenerated,
    ImageRecord,
)
from contracts.jobs import (
    CancelJob,
    FailureCode,
    JobError,
    JobFailed,
    JobKind,
    JobState,
    JobStatus,
)
from contracts.topology import OBJECTS
from generator_service import pipelines
from generator_service.adapters import LoraRef
from generator_service.config import GeneratorSettings
from generator_service.fairness import FairQueue
from terra.events import EventPublisher
from terra.images import ImageStore
from terra.jobs import InvalidTransition, JobStore
from terra.models import ModelStore
from terra.slots import QueueSlots
from terra.storage import ObjectStorage

log = logging.getLogger(__name__)


@dataclass
class GeneratorHandlers:
    settings: GeneratorSettings
    generator: pipelines.FluxGenerator
    jobs: JobStore
    models: ModelStore
    images: ImageStore
    slots: QueueSlots
    events: EventPublisher
    storage: ObjectStorage

    @property
    def batch_max_images(self) -> int:
        """Images one denoising loop may carry: batching pays on a GPU, not on a CPU."""
        configured = self.settings.batch_max_images
        if configured is not None:
            return configured
        return 4 if self.settings.generate_device.startswith("cuda") else 1

    # --- jobs -------------------------------------------------------------------------

    async def generate(self, command: GenerateImage) -> None:
        await self.generate_batch([command])

    async def generate_batch(self, commands: list[GenerateImage]) -> None:
        """Compatible commands (`batch_key`) in one denoising loop; one alone otherwise."""
        ready: list[tuple[GenerateImage, pipelines.GenerationRequest]] = []
        for command in commands:
            job = await self.jobs.get(command.job_id)
            if job is None:  # published straight to NATS (an operator), not via the gateway
                await self.jobs.create(JobState(job_id=command.job_id, user_id=command.user_id,
                                                kind=JobKind.GENERATION))
                job = await self.jobs.get(command.job_id)
            if job.user_id != command.user_id or job.status.is_terminal:
                await self.slots.release(command.user_id, command.job_id)
                continue  # finished before (a redelivery) or cancelled while queued
            lora = await self._lora(command)
            if lora is False:
                continue
            await self.jobs.update(command.job_id, lambda s: s.model_copy(
                update={"status": JobStatus.RUNNING}))
            await self.events.publish(GenerationStarted(
                message_id=f"{command.job_id}-started", user_id=command.user_id,
                job_id=command.job_id, correlation_id=command.correlation_id))
            ready.append((command, request_for(command, lora)))
        if not ready:
            return
        loop = asyncio.get_running_loop()
        runs = [_Run(self, command, loop) for command, _ in ready]
        watchers = [asyncio.create_task(run.watch_for_cancel()) for run in runs]

        def on_step(step: int, total: int) -> None:
            for run in runs:
                run.on_step(step, total)

        def should_stop() -> bool:  # a batch stops only when every job in it is cancelled
            return all(run.cancel.is_set() for run in runs)

        try:
            outcome = await asyncio.to_thread(
                self.generator.generate_batch, [request for _, request in ready],
                on_step=on_step, should_stop=should_stop)
        except pipelines.OutOfGpuMemory as exc:
            for command, _ in ready:
                await self._end(command, JobStatus.FAILED, FailureCode.OUT_OF_MEMORY, str(exc))
            return
        finally:
            for watcher in watchers:
                watcher.cancel()
        for (command, _), run, images in zip(
                ready, runs, [None] * len(ready) if isinstance(outcome, pipelines.Cancelled)
                else outcome, strict=True):
            if images is None or run.cancel.is_set():
                await self._end(command, JobStatus.CANCELLED, reason="cancelled while running")
            else:
                await self._store(command, images)

    async def _lora(self, command: GenerateImage) -> LoraRef | None | bool:
        if command.lora_id is None:
            return None
        record = await self.models.get(command.user_id, command.lora_id)
        if record is None or record.lora_key is None:
            await self._end(command, JobStatus.FAILED, FailureCode.NOT_FOUND,
                            "The LoRA no longer exists.")
            return False
        loop = asyncio.get_running_loop()

        def fetch() -> bytes:  # on a cache miss only, from the generation thread
            return asyncio.run_coroutine_threadsafe(
                self.storage.get_bytes(record.lora_key), loop).result(timeout=120)

        return LoraRef(record.model_id, fetch)

    async def _store(self, command: GenerateImage, outcome) -> None:
        expires = utcnow() + timedelta(days=self.settings.image_retention_days)
        stored = []
        for image in outcome:
            image_id = f"{command.job_id}-{image.index}"  # a rerun writes the same ones
            key = OBJECTS.image_key(command.user_id, command.job_id, f"{image.index}.png")
            await self.storage.put_bytes(key, image.png(), "image/png")
            await self.images.create(ImageRecord(
                image_id=image_id, user_id=command.user_id, job_id=command.job_id, key=key,
                width=command.width, height=command.height, seed=image.seed,
                prompt=command.prompt, model=command.model, lora_id=command.lora_id,
                expires_at=expires))
            stored.append(GeneratedImage(image_id=image_id, key=key, width=command.width,
                                         height=command.height, seed=image.seed))
        await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
            "status": JobStatus.SUCCEEDED, "progress": 1.0,
            "result": {"images": [i.model_dump() for i in stored]}}))
        await self.events.publish(ImageGenerated(
            message_id=f"{command.job_id}-completed", user_id=command.user_id,
            job_id=command.job_id, images=stored, correlation_id=command.correlation_id))
        await self.slots.release(command.user_id, command.job_id)

    # --- endings and cancels -------------------------------------------------------------

    async def _end(self, command: GenerateImage | CancelJob, status: JobStatus,
                   code: FailureCode | None = None, reason: str = "") -> bool:
        try:
            await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
                "status": status, "detail": reason,
                "error": JobError(code=code, reason=reason) if code else None}))
        except InvalidTransition:
            return False  # it ended another way first
        if status is JobStatus.CANCELLED:
            event = GenerationCancelled(message_id=f"{command.job_id}-cancelled",
                                        user_id=command.user_id, job_id=command.job_id,
                                        correlation_id=command.correlation_id)
        else:
            event = JobFailed(message_id=f"{command.job_id}-failed", user_id=command.user_id,
                              job_id=command.job_id, kind=JobKind.GENERATION, code=code,
                              reason=reason, correlation_id=command.correlation_id)
        await self.events.publish(event)
        await self.slots.release(command.user_id, command.job_id)
        return True

    async def cancel(self, command: CancelJob) -> None:
        job = await self.jobs.get(command.job_id)
        if job is None or job.user_id != command.user_id or job.status.is_terminal:
            return
        if job.status is JobStatus.QUEUED:
            await self._end(command, JobStatus.CANCELLED, reason="cancelled while queued")
            return
        await self.jobs.update(command.job_id,
                               lambda s: s.model_copy(update={"cancel_requested": True}))

    async def dead_letter(self, body: bytes) -> None:
        try:
            command = GenerateImage.model_validate_json(body)
        except ValidationError:
            log.error("undecodable generation command dropped")
            return
        await self._end(command, JobStatus.FAILED, FailureCode.DELIVERY_EXHAUSTED,
                        "The generation failed several times; it has been stopped.")

    async def sweep_expired(self) -> int:
        """Delete images past their retention: the object, then the record."""
        expired = await self.images.expired(utcnow())
        for record in expired:
            await self.storage.delete(record.key)
            await self.images.delete(record.user_id, record.image_id)
        if expired:
            log.info("expired images deleted", extra={"count": len(expired)})
        return len(expired)

    async def erase_account(self, user_id: str) -> None:
        for record in await self.images.list(user_id):
            await self.images.delete(user_id, record.image_id)
        erased = await self.storage.delete_prefix(f"images/{user_id}/")
        for model in await self.models.list(user_id):
            await asyncio.to_thread(self.generator.forget_adapter, model.model_id)
        log.info("account images erased", extra={"user_id": user_id, "objects": erased})


class _Run:
    """One generation in progress: progress events and cancel checks."""

    def __init__(self, handlers: GeneratorHandlers, command: GenerateImage,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.handlers = handlers
        self.command = command
        self.loop = loop
        self.cancel = threading.Event()
        self.last_emit = float("-inf")

    def on_step(self, step: int, total: int) -> None:  # on the generation thread
        now = time.monotonic()
        if now - self.last_emit < self.handlers.settings.progress_interval_s and step < total:
            return
        self.last_emit = now
        command = self.command
        asyncio.run_coroutine_threadsafe(self.handlers.events.publish(GenerationProgressed(
            message_id=f"{command.job_id}-progress-{step}", user_id=command.user_id,
            job_id=command.job_id, step=step, total_steps=total,
            correlation_id=command.correlation_id)), self.loop)

    async def watch_for_cancel(self) -> None:
        while not self.cancel.is_set():
            await asyncio.sleep(self.handlers.settings.cancel_poll_s)
            job = await self.handlers.jobs.get(self.command.job_id)
            if job is not None and job.cancel_requested:
                self.cancel.set()


def request_for(command: GenerateImage, lora: LoraRef | None) -> pipelines.GenerationRequest:
    return pipelines.GenerationRequest(
        prompt=command.prompt, model=command.model.value, lora=lora,
        lora_scale=command.lora_scale, width=command.width, height=command.height,
        steps=command.steps,
        guidance=None if command.model.value == "schnell" else command.guidance,
        seed=command.seed, num_images=command.num_images)


def compatible(a: GenerateImage, b: GenerateImage) -> bool:
    """Jobs that can share a denoising loop (the pipeline's `batch_key`, from commands)."""
    def key(c: GenerateImage) -> tuple:
        return (c.model, c.lora_id, c.lora_scale, c.width, c.height, c.steps, c.guidance)
    return key(a) == key(b) and a.seed is not None and b.seed is not None


@dataclass
class Held:
    msg: object  # nats-py JetStream message, unacked while held
    command: GenerateImage


class FairWorker:
    """Pulls commands into a window and serves them round-robin by user."""

    def __init__(self, handlers: GeneratorHandlers, subscription) -> None:
        self.handlers = handlers
        self.subscription = subscription
        self.queue: FairQueue[Held] = FairQueue()
        self.positions: dict[str, int] = {}
        self.running: list[Held] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        heartbeats = asyncio.create_task(self._keep_alive())
        try:
            while not self.stopping.is_set():
                await self._fill()
                await self._announce_positions()
                queued = self.queue.pop()
                if queued is None:
                    continue
                batch = [queued.item] + self._compatible_with(queued.item)
                self.running = batch
                await self._settle(batch)
                self.running = []
        finally:
            heartbeats.cancel()
            # Held commands go back to the stream for the other workers.
            for queued in list(self.queue):
                with contextlib.suppress(Exception):
                    await queued.item.msg.nak()

    async def _fill(self) -> None:
        room = self.handlers.settings.queue_window - len(self.queue)
        if room <= 0:
            return
        try:
            batch = await self.subscription.fetch(room, timeout=0.05 if len(self.queue) else 1.0)
        except NatsTimeout:
            return
        for msg in batch:
            try:
                command = GenerateImage.model_validate_json(msg.data)
            except ValidationError as exc:
                log.warning("invalid generation command", extra={"error": str(exc)})
                await msg.ack()
                continue
            if command.job_id in self.queue:
                await msg.ack()  # a duplicate delivery of what is already held
                continue
            self.queue.add(command.job_id, command.user_id, Held(msg, command))

    async def _announce_positions(self) -> None:
        order = self.queue.order()
        for position, job_id in enumerate(order, start=1 if self.running else 0):
            if self.positions.get(job_id) == position:
                continue
            held = next(q.item for q in self.queue if q.job_id == job_id)
            job = await self.handlers.jobs.get(job_id)
            if job is not None and job.status.is_terminal:
                # Cancelled while it waited here: out of the window, no stale positions.
                self.queue.remove(job_id)
                self.positions.pop(job_id, None)
                await held.msg.ack()
                continue
            first = job_id not in self.positions
            self.positions[job_id] = position
            kind = GenerationQueued if first else GenerationQueuePositionChanged
            await self.handlers.events.publish(kind(
                message_id=f"{job_id}-{'queued' if first else 'position'}-{position}",
                user_id=held.command.user_id, job_id=job_id, position=position,
                correlation_id=held.command.correlation_id))

    def _compatible_with(self, first: Held) -> list[Held]:
        """Queued jobs that can join `first`'s loop, up to the batch's image budget."""
        budget = self.handlers.batch_max_images - first.command.num_images
        joined = []
        for queued in list(self.queue):
            command = queued.item.command
            if budget >= command.num_images and compatible(first.command, command):
                self.queue.remove(queued.job_id)
                joined.append(queued.item)
                budget -= command.num_images
        return joined

    async def _settle(self, batch: list[Held]) -> None:
        for held in batch:
            self.positions.pop(held.command.job_id, None)
        try:
            await self.handlers.generate_batch([held.command for held in batch])
        except Exception:
            log.exception("generation failed; will retry")
            for held in batch:
                await held.msg.nak(delay=min(60.0, 2.0 ** held.msg.metadata.num_delivered))
        else:
            for held in batch:
                await held.msg.ack()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.handlers.settings.heartbeat_s)
            held = [q.item for q in self.queue] + self.running
            for item in held:
                with contextlib.suppress(Exception):
                    await item.msg.in_progress()
