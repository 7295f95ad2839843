"""trainer_service's entrypoint: trainings (one at a time per worker), cancels and account
erasure, each from its own durable consumer, served by `terra.runtime.service`."""

from __future__ import annotations

from faststream import FastStream

from terra.runtime.service import run_app, service_app
from trainer_service.bootstrap import bootstrap
from trainer_service.config import TrainerSettings

SERVICE = "trainer_service"


def build_app(settings: TrainerSettings | None = None, *,
              configure_process: bool = True) -> FastStream:
    settings = settings or TrainerSettings()
    return service_app(SERVICE, settings,
                      lambda connection, storage: bootstrap(connection, storage, settings),
                      configure_process=configure_process)


def main() -> None:
    run_app(build_app())
