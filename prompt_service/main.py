"""prompt_service's entrypoint: the prompt work queue, served by `terra.runtime.service`."""

from __future__ import annotations

from faststream import FastStream

from prompt_service.bootstrap import bootstrap
from prompt_service.config import PromptSettings
from terra.runtime.service import run_app, service_app

SERVICE = "prompt_service"


def build_app(settings: PromptSettings | None = None, *, configure_process: bool = True,
              **dependencies) -> FastStream:
    settings = settings or PromptSettings()
    return service_app(SERVICE, settings,
                      lambda connection, _: bootstrap(connection, settings, **dependencies),
                      uses_storage=False,
                      configure_process=configure_process)


def main() -> None:
    run_app(build_app())
