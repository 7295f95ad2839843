"""generator_service's one wiring place: handlers from their dependencies (tests pass fakes)."""

from __future__ import annotations

import asyncio
import logging

import torch
from nats.aio.client import Client as NatsClient

from contracts.generation import DeleteImage
from contracts.jobs import CancelJob, JobKind
from contracts.topology import (
    GENERATION_CONTROL,
    GENERATION_RECORDS,
    GENERATION_WORKERS,
    GENERATOR,
    GENERATOR_MODEL_DELETIONS,
    account_cleanup_consumer,
)
from contracts.training import ModelDeleted
from generator_service.adapters import AdapterCache
from generator_service.config import GeneratorSettings
from generator_service.handlers import GeneratorHandlers
from generator_service.jobs import GenerationCleanUp, GenerationEvents
from generator_service.pipelines import FluxGenerator
from generator_service.worker import FairWorker
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import JobLifecycle, erasing
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.nats.connection import jetstream
from terra.nats.events import EventPublisher
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from terra.runtime.service import Consumer, ServiceParts
from terra.runtime.worker import handling

ACCOUNT_CLEANUP = account_cleanup_consumer("generator")
log = logging.getLogger(__name__)


def load_generator(settings: GeneratorSettings) -> FluxGenerator:
    return FluxGenerator.load(
        {"schnell": settings.schnell_model, "dev": settings.dev_model},
        device=settings.generate_device, dtype=getattr(torch, settings.generate_dtype),
        profile=settings.memory_profile, compile=settings.compile,
        adapter_cache=AdapterCache(settings.adapter_cache_size, settings.adapter_cache_bytes),
        images_per_loop=settings.images_per_loop,
    )


def build_handlers(settings: GeneratorSettings, generator: FluxGenerator, *, jobs: JobStore,
                   models: ModelStore, images: ImageStore, slots: QueueSlots,
                   events: EventPublisher, storage: ObjectStorage,
                   deleted_accounts: DeletedAccounts | None = None) -> GeneratorHandlers:
    lifecycle = JobLifecycle(JobKind.GENERATION, jobs, events, GenerationEvents(),
                             on_end=GenerationCleanUp(slots), deleted_accounts=deleted_accounts,
                             progress_interval_s=settings.progress_interval_s)
    return GeneratorHandlers(settings=settings, generator=generator, lifecycle=lifecycle,
                             jobs=jobs, models=models, images=images, slots=slots,
                             events=events, storage=storage)


async def bootstrap(connection: NatsClient, storage: ObjectStorage,
                    settings: GeneratorSettings) -> ServiceParts:
    js = jetstream(connection, GENERATOR)
    generator = await asyncio.to_thread(load_generator, settings)
    jobs, events = await JobStore.open(js, [JobKind.GENERATION]), EventPublisher(js)
    handlers = build_handlers(
        settings, generator, jobs=jobs, models=await ModelStore.open(js),
        images=await ImageStore.open(js), slots=await QueueSlots.open(js, JobKind.GENERATION.value),
        events=events, storage=storage, deleted_accounts=await DeletedAccounts.open(js))
    worker = FairWorker(js, handlers, handlers.lifecycle, jobs=jobs, events=events,
                        queue_window=settings.queue_window,
                        batch_max_images=settings.images_per_loop,
                        heartbeat_s=settings.heartbeat_s,
                        fetch_timeout_s=settings.fetch_timeout_s)

    log.info("pipelines loaded", extra={"profile": generator.profile.name,
                                        "device": settings.generate_device})
    return ServiceParts(
        domains=(JobKind.GENERATION.value,),
        consumers=[Consumer(GENERATION_CONTROL, handling(CancelJob, handlers.cancel)),
                   Consumer(GENERATION_RECORDS, handling(DeleteImage, handlers.delete_image)),
                   Consumer(GENERATOR_MODEL_DELETIONS,
                            handling(ModelDeleted, handlers.forget_model)),
                   Consumer(ACCOUNT_CLEANUP, erasing(handlers.erase_account,
                                                     settings.erasure_second_pass_s))],
        loops={"fair-worker": worker.run, "held-heartbeats": worker.keep_alive,
               "retention-sweep": handlers.sweep_forever},
        dead_letters={"generations": (GENERATION_WORKERS, handlers.dead_letter)},
        workload=worker.workload, stop=worker.stop)
