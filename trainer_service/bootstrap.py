"""trainer_service's one wiring place: handlers from their dependencies (tests pass fakes)."""

from __future__ import annotations

from collections.abc import Awaitable

from nats.aio.client import Client as NatsClient

from contracts.jobs import CancelJob, JobKind
from contracts.topology import (
    TRAINER,
    TRAINING_CONTROL,
    TRAINING_RECORDS,
    TRAINING_WORKERS,
    account_cleanup_consumer,
)
from contracts.training import DeleteModel, StartTraining
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import JobLifecycle, erasing
from terra.jobs.store import JobStore
from terra.nats.connection import jetstream
from terra.nats.events import EventPublisher
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from terra.runtime.service import Consumer, ServiceParts
from terra.runtime.worker import handling
from trainer_service.config import TrainerSettings
from trainer_service.datasets import DatasetRetention
from trainer_service.handlers import TrainerHandlers, TrainingCleanUp, TrainingEvents
from trainer_service.store import TrainingStore

ACCOUNT_CLEANUP = account_cleanup_consumer("trainer")


def build_handlers(settings: TrainerSettings, *, jobs: JobStore, models: ModelStore,
                   events: EventPublisher, store: TrainingStore,
                   deleted_accounts: DeletedAccounts | None = None) -> TrainerHandlers:
    lifecycle = JobLifecycle(JobKind.TRAINING, jobs, events, TrainingEvents(),
                             on_end=TrainingCleanUp(models, store, settings.base_model),
                             deleted_accounts=deleted_accounts)
    return TrainerHandlers(settings=settings, lifecycle=lifecycle, jobs=jobs, models=models,
                           events=events, store=store)


async def bootstrap(connection: NatsClient, storage: ObjectStorage,
                    settings: TrainerSettings) -> ServiceParts:
    js = jetstream(connection, TRAINER)
    handlers = build_handlers(settings, jobs=await JobStore.open(js, [JobKind.TRAINING]),
                              models=await ModelStore.open(js), events=EventPublisher(js),
                              store=TrainingStore(storage),
                              deleted_accounts=await DeletedAccounts.open(js))

    def on_start(command: StartTraining, msg) -> Awaitable[None]:
        return handlers.start(command, msg.metadata.num_delivered, msg.in_progress)

    return ServiceParts(
        domains=(JobKind.TRAINING.value,),
        consumers=[Consumer(TRAINING_WORKERS, handling(StartTraining, on_start,
                                                       with_message=True)),
                   Consumer(TRAINING_CONTROL, handling(CancelJob, handlers.cancel)),
                   Consumer(TRAINING_RECORDS, handling(DeleteModel, handlers.delete_model)),
                   Consumer(ACCOUNT_CLEANUP, erasing(handlers.erase_account,
                                                     settings.erasure_second_pass_s))],
        loops={"dataset-retention": DatasetRetention(storage, handlers.models,
                                                     settings).sweep_forever},
        dead_letters={"trainings": (TRAINING_WORKERS, handlers.dead_letter)})
