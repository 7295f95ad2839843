"""`python -m gateway`: serve the gateway against the NATS and S3 given by settings."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from terra.logs import setup_logging
from terra.telemetry import setup_tracing


def main() -> None:
    settings = GatewaySettings()
    setup_logging(settings, "gateway")
    setup_tracing(settings, "gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_interval_s,
        proxy_headers=settings.trust_forwarded_for,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )


if __name__ == "__main__":
    main()
