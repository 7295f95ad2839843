"""generator_service's entrypoint: the fair worker on `generation_workers`, cancels on
`generation_control`, account erasure; base pipelines loaded once at start-up."""

from __future__ import annotations

import asyncio
import logging

import torch
from faststream import FastStream
from faststream.nats import NatsMessage

from contracts.auth import AccountDeleted
from contracts.jobs import CancelJob
from contracts.topology import (
    GENERATION_CONTROL,
    GENERATION_WORKERS,
    account_cleanup_consumer,
)
from generator_service.adapters import AdapterCache
from generator_service.config import GeneratorSettings
from generator_service.handlers import FairWorker, GeneratorHandlers
from generator_service.pipelines import FluxGenerator
from terra.broker import build_broker
from terra.events import EventPublisher
from terra.images import ImageStore
from terra.jobs import JobStore
from terra.logs import setup_logging
from terra.models import ModelStore
from terra.service import prepare_infrastructure, run_app
from terra.slots import QueueSlots
from terra.storage import ObjectStorage
from terra.telemetry import setup_tracing
from terra.worker import decode, durable_pull, settle, watch_dead_letters

SERVICE = "generator_service"
ACCOUNT_CLEANUP = account_cleanup_consumer("generator")
log = logging.getLogger(__name__)


def load_generator(settings: GeneratorSettings) -> FluxGenerator:
    return FluxGenerator.load(
        {"schnell": settings.schnell_model, "dev": settings.dev_model},
        device=settings.generate_device, dtype=getattr(torch, settings.generate_dtype),
        profile=settings.memory_profile, compile=settings.compile,
        adapter_cache=AdapterCache(settings.adapter_cache_size, settings.adapter_cache_bytes),
    )


def build_app(settings: GeneratorSettings | None = None, *,
              configure_process: bool = True) -> FastStream:
    settings = settings or GeneratorSettings()
    broker = build_broker(settings, name=SERVICE)
    app = FastStream(broker, logger=log)
    handlers: list[GeneratorHandlers] = []
    workers: list[tuple[FairWorker, asyncio.Task]] = []
    sweepers: list[asyncio.Task] = []


    @durable_pull(broker, GENERATION_CONTROL, title="generator:" + GENERATION_CONTROL.durable)
    async def on_cancel(msg: NatsMessage) -> None:
        await settle(msg, lambda: handlers[0].cancel(decode(CancelJob, msg.body)))

    @durable_pull(broker, ACCOUNT_CLEANUP, title="generator:" + ACCOUNT_CLEANUP.durable)
    async def on_account_deleted(msg: NatsMessage) -> None:
        await settle(msg, lambda: handlers[0].erase_account(
            decode(AccountDeleted, msg.body).user_id))

    @app.on_startup
    async def start() -> None:
        if configure_process:
            setup_logging(settings, SERVICE)
            setup_tracing(settings, SERVICE)
        storage = ObjectStorage.from_settings(settings)
        await prepare_infrastructure(broker, settings, storage=storage, consumers=[
            GENERATION_WORKERS, GENERATION_CONTROL, ACCOUNT_CLEANUP])
        connection = await broker.connect()
        js = connection.jetstream()
        generator = await asyncio.to_thread(load_generator, settings)
        handlers[:] = [GeneratorHandlers(
            settings=settings, generator=generator, jobs=await JobStore.open(js),
            models=await ModelStore.open(js), images=await ImageStore.open(js),
            slots=await QueueSlots.open(js, "generation"), events=EventPublisher(js),
            storage=storage)]
        await watch_dead_letters(connection, GENERATION_WORKERS, handlers[0].dead_letter,
                                 queue=SERVICE)
        log.info("generator_service ready", extra={"profile": generator.profile.name,
                                                   "device": settings.generate_device})

    @app.after_startup
    async def start_worker() -> None:
        js = broker.connection.jetstream()
        subscription = await js.pull_subscribe_bind(GENERATION_WORKERS.durable,
                                                    stream=GENERATION_WORKERS.stream)
        worker = FairWorker(handlers[0], subscription)
        workers.append((worker, asyncio.create_task(worker.run())))
        sweepers.append(asyncio.create_task(sweep_forever()))

    async def sweep_forever() -> None:
        while True:
            try:
                await handlers[0].sweep_expired()
            except Exception:
                log.exception("retention sweep failed; next one in a while")
            await asyncio.sleep(settings.retention_sweep_s)

    @app.on_shutdown
    async def stop_worker() -> None:
        for sweeper in sweepers:
            sweeper.cancel()
        for worker, task in workers:
            worker.stopping.set()  # finishes the job in hand, returns the held ones
            try:
                await asyncio.wait_for(task, settings.shutdown_grace_s)
            except TimeoutError:
                task.cancel()
            # Our own pull subscription: left open, the connection's drain would wait on it.
            await worker.subscription.unsubscribe()

    return app


def main() -> None:
    run_app(build_app())
