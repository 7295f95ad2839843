"""`python -m gateway`: serve the gateway against the NATS and S3 given by settings."""

from __future__ import annotations

import os
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.server import (
    AbortStalledWebSocket,
    header_limited,
    quiet_probes,
    refuse_public_listener,
)
from terra.errors import ConfigurationError
from terra.runtime.logs import setup_logging
from terra.runtime.telemetry import setup_tracing


def main() -> None:
    # `terra up` binds the listener itself and hands it down, so that no other program
    # can take the port and a restarted gateway serves on the same socket.
    listen_fd = int(fd) if (fd := os.environ.get("TERRA_LISTEN_FD")) else None
    try:
        settings = GatewaySettings()
        refuse_public_listener(settings, listen_fd)
    except ConfigurationError as exc:
        sys.exit(f"gateway: {exc}")
    # Tokens reach the server in `?token=` (browsers' WebSockets) and headers; uvicorn logs
    # the path with its query string: every record is redacted before it is written.
    setup_logging(settings, "gateway")
    quiet_probes()
    setup_tracing(settings, "gateway")
    where = ({"fd": listen_fd} if listen_fd is not None
             else {"host": settings.host, "port": settings.port})
    uvicorn.run(
        create_app(settings),
        **where,
        http=header_limited(settings.max_header_bytes, settings.max_headers),
        ws=AbortStalledWebSocket,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_interval_s,
        proxy_headers=settings.trust_forwarded_for,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )


if __name__ == "__main__":
    main()
