"""notifier_service's entrypoint: its requests, consumers and sends, served by
`terra.runtime.service`."""

from __future__ import annotations

from faststream import FastStream

from notifier_service.bootstrap import bootstrap
from notifier_service.config import NotifierSettings
from terra.runtime.service import run_app, service_app

SERVICE = "notifier_service"


def build_app(settings: NotifierSettings | None = None, *, configure_process: bool = True,
              **dependencies) -> FastStream:
    """Tests pass `configure_process=False` (pytest keeps its logging) and fakes by name
    (`bootstrap`'s keyword arguments)."""
    settings = settings or NotifierSettings()
    return service_app(SERVICE, settings,
                       lambda connection, _: bootstrap(connection, settings, **dependencies),
                       uses_storage=False, configure_process=configure_process)


def main() -> None:
    run_app(build_app())
