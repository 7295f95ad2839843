"""Broker factory: a FastStream `NatsBroker` built from settings, with tracing."""

from __future__ import annotations

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import trace

from terra.settings import RuntimeSettings


def build_broker(settings: RuntimeSettings, *, name: str) -> NatsBroker:
    # Servers are fixed when the broker is built (FastStream's connect() takes no URL).
    return NatsBroker(
        settings.nats_servers,
        name=name,
        connect_timeout=int(settings.nats_connect_timeout_s),
        max_reconnect_attempts=-1,
        middlewares=(
            (NatsTelemetryMiddleware(tracer_provider=trace.get_tracer_provider()),)
            if settings.tracing
            else ()
        ),
        graceful_timeout=settings.shutdown_grace_s,
        logger=None,
    )
