"""trainer_service's entrypoint: trainings (one at a time per worker), cancels, and
account erasure, each from its own durable consumer."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsMessage

from contracts.auth import AccountDeleted
from contracts.jobs import CancelJob
from contracts.topology import (
    TRAINING_CONTROL,
    TRAINING_WORKERS,
    account_cleanup_consumer,
)
from contracts.training import StartTraining
from terra.broker import build_broker
from terra.events import EventPublisher
from terra.jobs import JobStore
from terra.logs import setup_logging
from terra.models import ModelStore
from terra.service import prepare_infrastructure, run_app
from terra.storage import ObjectStorage
from terra.telemetry import setup_tracing
from terra.worker import decode, durable_pull, settle, watch_dead_letters
from trainer_service.config import TrainerSettings
from trainer_service.handlers import TrainerHandlers
from trainer_service.store import TrainingStore

SERVICE = "trainer_service"
ACCOUNT_CLEANUP = account_cleanup_consumer("trainer")
log = logging.getLogger(__name__)


def build_app(settings: TrainerSettings | None = None, *,
              configure_process: bool = True) -> FastStream:
    settings = settings or TrainerSettings()
    broker = build_broker(settings, name=SERVICE)
    app = FastStream(broker, logger=log)
    handlers: list[TrainerHandlers] = []  # built at start-up, before subscribers bind


    @durable_pull(broker, TRAINING_WORKERS, title="trainer:" + TRAINING_WORKERS.durable)
    async def on_start(msg: NatsMessage) -> None:
        await settle(msg, lambda: handlers[0].start(decode(StartTraining, msg.body),
                                                    msg.in_progress))

    @durable_pull(broker, TRAINING_CONTROL, title="trainer:" + TRAINING_CONTROL.durable)
    async def on_cancel(msg: NatsMessage) -> None:
        await settle(msg, lambda: handlers[0].cancel(decode(CancelJob, msg.body)))

    @durable_pull(broker, ACCOUNT_CLEANUP, title="trainer:" + ACCOUNT_CLEANUP.durable)
    async def on_account_deleted(msg: NatsMessage) -> None:
        await settle(msg, lambda: handlers[0].erase_account(
            decode(AccountDeleted, msg.body).user_id))

    @app.on_startup
    async def start() -> None:
        if configure_process:
            setup_logging(settings, SERVICE)
            setup_tracing(settings, SERVICE)
        storage = ObjectStorage.from_settings(settings)
        await prepare_infrastructure(broker, settings, storage=storage,
                                     consumers=[TRAINING_WORKERS, TRAINING_CONTROL,
                                                ACCOUNT_CLEANUP])
        connection = await broker.connect()
        js = connection.jetstream()
        handlers[:] = [TrainerHandlers(
            settings=settings, jobs=await JobStore.open(js), models=await ModelStore.open(js),
            events=EventPublisher(js), store=TrainingStore(storage))]
        await watch_dead_letters(connection, TRAINING_WORKERS, handlers[0].dead_letter,
                                 queue=SERVICE)
        log.info("trainer_service ready", extra={"base_model": settings.base_model or "tiny",
                                                 "device": settings.train_device})

    return app


def main() -> None:
    run_app(build_app())
