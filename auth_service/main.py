"""auth_service's entrypoint: its requests answered by `terra.runtime.service`."""

from __future__ import annotations

from faststream import FastStream
from google.auth import transport

from auth_service.bootstrap import bootstrap
from auth_service.config import AuthSettings
from terra.runtime.service import run_app, service_app

SERVICE = "auth_service"


def build_app(settings: AuthSettings | None = None, *, configure_process: bool = True,
              google_request: transport.Request | None = None) -> FastStream:
    """Tests pass `configure_process=False` to keep pytest's logging."""
    settings = settings or AuthSettings()
    return service_app(SERVICE, settings,
                       lambda connection, _: bootstrap(connection, settings,
                                                       google_request=google_request),
                       uses_storage=False, configure_process=configure_process)


def main() -> None:
    run_app(build_app())
