"""generator_service's entrypoint: the fair worker on `generation_workers`; cancels, image
and model deletions and account erasure from their own consumers; served by
`terra.runtime.service`. Base pipelines are loaded once at start-up."""

from __future__ import annotations

from faststream import FastStream

from generator_service.bootstrap import bootstrap
from generator_service.config import GeneratorSettings
from terra.runtime.service import run_app, service_app

SERVICE = "generator_service"


def build_app(settings: GeneratorSettings | None = None, *,
              configure_process: bool = True) -> FastStream:
    settings = settings or GeneratorSettings()
    return service_app(SERVICE, settings,
                      lambda connection, storage: bootstrap(connection, storage, settings),
                      configure_process=configure_process)


def main() -> None:
    run_app(build_app())
