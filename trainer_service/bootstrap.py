"""trainer_service's one wiring place: handlers from their dependencies (tests pass fakes)."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from contracts.auth import AccountDeleted
from contracts.jobs import CancelJob, JobKind
from contracts.topology import (
    TRAINING_CONTROL,
    TRAINING_RECORDS,
    TRAINING_WORKERS,
    account_cleanup_consumer,
)
from contracts.training import DeleteModel, StartTraining
from terra.events import EventPublisher
from terra.jobs import JobStore
from terra.lifecycle import JobLifecycle
from terra.models import ModelStore
from terra.service import Consumer, ServiceParts
from terra.storage import ObjectStorage
from terra.worker import decode, settle
from trainer_service.config import TrainerSettings
from trainer_service.handlers import TrainerHandlers, TrainingEvents
from trainer_service.store import TrainingStore

ACCOUNT_CLEANUP = account_cleanup_consumer("trainer")


def build_handlers(settings: TrainerSettings, *, jobs: JobStore, models: ModelStore,
                   events: EventPublisher, store: TrainingStore) -> TrainerHandlers:
    handlers = TrainerHandlers(settings=settings, lifecycle=None, models=models,
                               events=events, store=store)
    handlers.lifecycle = JobLifecycle(JobKind.TRAINING, jobs, events, TrainingEvents(),
                                      on_end=handlers.job_ended)
    return handlers


async def bootstrap(connection: NatsClient, storage: ObjectStorage,
                    settings: TrainerSettings) -> ServiceParts:
    js = connection.jetstream()
    handlers = build_handlers(settings, jobs=await JobStore.open(js),
                              models=await ModelStore.open(js), events=EventPublisher(js),
                              store=TrainingStore(storage))

    async def on_start(msg) -> None:
        await settle(msg, lambda: handlers.start(decode(StartTraining, msg.data),
                                                 msg.metadata.num_delivered, msg.in_progress))

    async def on_cancel(msg) -> None:
        await settle(msg, lambda: handlers.cancel(decode(CancelJob, msg.data)))

    async def on_delete_model(msg) -> None:
        await settle(msg, lambda: handlers.delete_model(decode(DeleteModel, msg.data)))

    async def on_account_deleted(msg) -> None:
        await settle(msg, lambda: handlers.erase_account(
            decode(AccountDeleted, msg.data).user_id))

    return ServiceParts(
        domains=(JobKind.TRAINING.value,),
        consumers=[Consumer(TRAINING_WORKERS, on_start), Consumer(TRAINING_CONTROL, on_cancel),
                   Consumer(TRAINING_RECORDS, on_delete_model),
                   Consumer(ACCOUNT_CLEANUP, on_account_deleted)],
        dead_letters={"trainings": (TRAINING_WORKERS, handlers.dead_letter)})
