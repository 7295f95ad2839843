"""generator_service's use cases: take in a command, generate a batch of compatible jobs,
cancel, sweep expired images, erase a deleted account's images.

How a job starts, ends, retries and cancels is `terra.jobs.lifecycle`'s; scheduling (the fair
window, positions, batches) is `scheduling.py`'s and the worker loop `worker.py`'s. What
is left here is the generation itself: one path, a single job being a batch of one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from contracts.base import utcnow
from contracts.generation import (
    DeleteImage,
    GeneratedImage,
    GenerateImage,
    GenerationProgressed,
    ImageDeleted,
    ImageGenerated,
    ImageRecord,
)
from contracts.jobs import CancelJob, FailureCode, JobKind
from contracts.topology import OBJECTS
from contracts.training import ModelDeleted
from fluxkit.errors import OutOfGpuMemory
from generator_service import pipelines
from generator_service.adapters import AdapterError, LoraRef
from generator_service.config import GeneratorSettings
from generator_service.jobs import ref_of
from terra.errors import ObjectMissing, TerraError
from terra.jobs.lifecycle import JobFailure, JobLifecycle
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage

log = logging.getLogger(__name__)


@dataclass
class GeneratorHandlers:
    settings: GeneratorSettings
    generator: pipelines.FluxGenerator
    lifecycle: JobLifecycle
    jobs: JobStore
    models: ModelStore
    images: ImageStore
    slots: QueueSlots
    events: EventPublisher
    storage: ObjectStorage
    running: list[str] = field(default_factory=list)  # job ids in the loop now

    # --- jobs -------------------------------------------------------------------------

    async def take(self, command: GenerateImage, delivery: int) -> bool:
        """A command arrives in the window: False when there is nothing to do (finished,
        another user's id); a job whose worker died is queued again and says so."""
        return await self.lifecycle.receive(ref_of(command), delivery) is not None

    async def generate(self, commands: list[GenerateImage]) -> None:
        """Compatible commands (`compatible`) in one denoising loop; a batch of one alone.

        Raises `JobFailure` when the batch cannot succeed (its LoRA is gone, the card is
        out of memory); the worker fails every job in it then.
        """
        lora = await self._lora(commands[0])
        ready = [c for c in commands if await self.lifecycle.begin(ref_of(c)) is not None]
        if not ready:
            return  # every one ended meanwhile (cancelled while held)
        loop = asyncio.get_running_loop()
        runs = [_Run(self, command, loop) for command in ready]
        watchers = [asyncio.create_task(self.lifecycle.watch_for_cancel(
            ref_of(run.command), run.cancel, self.settings.cancel_poll_s)) for run in runs]

        def on_step(step: int, total: int) -> None:
            for run in runs:
                run.on_step(step, total)

        def should_stop() -> bool:  # a batch stops only when every job in it is cancelled
            return all(run.cancel.is_set() for run in runs)

        self.running = [command.job_id for command in ready]
        try:
            outcome = await asyncio.to_thread(
                self.generator.generate_batch, [request_for(c, lora) for c in ready],
                on_step=on_step, should_stop=should_stop)
        except OutOfGpuMemory as exc:
            raise JobFailure(FailureCode.OUT_OF_MEMORY, str(exc)) from exc
        # A LoRA that cannot work now will not work later: the job fails once, with why.
        except LoraFileMissing as exc:
            raise JobFailure(FailureCode.NOT_FOUND, "The LoRA's file no longer exists.") from exc
        except AdapterError as exc:
            raise JobFailure(FailureCode.INVALID_INPUT, f"The LoRA cannot be used: {exc}") from exc
        finally:
            self.running = []
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        results = ([None] * len(ready) if isinstance(outcome, pipelines.Cancelled)
                   else outcome)
        for run, images in zip(runs, results, strict=True):
            if images is None or run.cancel.is_set():
                await self.lifecycle.cancel(ref_of(run.command), "cancelled while running")
            else:
                await self._store(run.command, images)

    async def _lora(self, command: GenerateImage) -> LoraRef | None:
        if command.lora_id is None:
            return None
        record = await self.models.get(command.user_id, command.lora_id)
        if record is None or record.lora_key is None:
            raise JobFailure(FailureCode.NOT_FOUND, "The LoRA no longer exists.")
        loop = asyncio.get_running_loop()

        def fetch() -> bytes:  # on a cache miss only, from the generation thread
            try:
                return asyncio.run_coroutine_threadsafe(
                    self.storage.get_bytes(record.lora_key), loop).result(timeout=120)
            except ObjectMissing as exc:  # anything else (unreachable): another attempt
                raise LoraFileMissing(record.lora_key) from exc

        return LoraRef(record.model_id, fetch)

    async def _store(self, command: GenerateImage, outcome) -> None:
        if await self.lifecycle.account_gone(ref_of(command)):
            return  # deleted while the images were made: they are not kept
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
        await self.lifecycle.succeed(ref_of(command), ImageGenerated(
            user_id=command.user_id, job_id=command.job_id, images=stored),
            result={"images": [i.model_dump() for i in stored]})

    # --- endings, cancels, housekeeping -----------------------------------------------------

    async def cancel(self, command: CancelJob) -> None:
        await self.lifecycle.request_cancel(command)

    async def dead_letter(self, body: bytes) -> None:
        await self.lifecycle.dead_letter_raw(body)

    async def delete_image(self, command: DeleteImage) -> None:
        """The file, then the record, then the word (idempotent: a repeat says it again)."""
        record = await self.images.get(command.user_id, command.image_id)
        if record is not None:
            await self.storage.delete(record.key)
            await self.images.delete(command.user_id, command.image_id)
        await self.events.publish(ImageDeleted(
            message_id=f"{command.image_id}-deleted", user_id=command.user_id,
            image_id=command.image_id, correlation_id=command.correlation_id))

    async def forget_model(self, event: ModelDeleted) -> None:
        """A deleted LoRA leaves the adapter cache now, not at eviction."""
        await asyncio.to_thread(self.generator.forget_adapter, event.model_id)

    async def sweep_expired(self) -> int:
        """Delete images past their retention: the object, then the record."""
        expired = await self.images.expired(utcnow())
        for record in expired:
            await self.storage.delete(record.key)
            await self.images.delete(record.user_id, record.image_id)
        if expired:
            log.info("expired images deleted", extra={"count": len(expired)})
        return len(expired)

    async def sweep_forever(self) -> None:
        """Supervised: a failed sweep is tried again at the next one."""
        while True:
            try:
                await self.sweep_expired()
            except Exception:
                log.exception("retention sweep failed; next one in a while")
            await asyncio.sleep(self.settings.retention_sweep_s)

    async def erase_account(self, user_id: str) -> None:
        """What generation holds of a deleted account: images (files and records), its
        jobs and queue slots, its LoRAs in the adapter cache."""
        await self.images.erase(user_id)
        erased = await self.storage.delete_prefix(f"images/{user_id}/")
        jobs = await self.jobs.erase(user_id, JobKind.GENERATION)
        await self.slots.forget(user_id)
        for model in await self.models.list(user_id):
            await asyncio.to_thread(self.generator.forget_adapter, model.model_id)
        log.info("account images erased",
                 extra={"user_id": user_id, "objects": erased, "jobs": jobs})


class LoraFileMissing(TerraError):
    """The model's record names a LoRA file that storage does not have."""


class _Run:
    """One job in a denoising loop: its progress events and its cancel flag."""

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
        asyncio.run_coroutine_threadsafe(self.handlers.lifecycle.progress(
            ref_of(command), GenerationProgressed(
                message_id=f"{command.job_id}-progress-{step}", user_id=command.user_id,
                job_id=command.job_id, step=step, total_steps=total,
                correlation_id=command.correlation_id), step / total), self.loop)


def request_for(command: GenerateImage, lora: LoraRef | None) -> pipelines.GenerationRequest:
    return pipelines.GenerationRequest(
        prompt=command.prompt, model=command.model.value, lora=lora,
        lora_scale=command.lora_scale, width=command.width, height=command.height,
        steps=command.steps,
        guidance=None if command.model.value == "schnell" else command.guidance,
        seed=command.seed, num_images=command.num_images)
