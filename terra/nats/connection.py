"""Connections to NATS, built from settings: each process as its own identity.

Every connection authenticates with the process's NKEY (`TERRA_NATS_NKEY_FILE`), uses TLS
when a CA is set, and receives replies on its identity's own inbox prefix. Each identity
signs in to an account of its own, which reaches JetStream through its imports under a
prefix (`jetstream`). A refused publish or subscribe is invisible to the caller (it just
times out): the error callback logs every one, loudly.
"""

from __future__ import annotations

import logging
import ssl

import nats
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsNKey
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from opentelemetry import trace

from contracts.permissions import API, api_prefix, inbox_prefix
from terra.settings import RuntimeSettings

log = logging.getLogger(__name__)


def read_seed(settings: RuntimeSettings, identity: str) -> str | None:
    """The NKEY seed, read once at start: a key rotated on disk meanwhile (`terra
    nats-credentials rotate`) must not change the key a reconnect signs with before the
    process restarts on it."""
    path = settings.nats_seed_file(identity)
    return path.read_text().strip() if path is not None else None


def tls_context(settings: RuntimeSettings) -> ssl.SSLContext | None:
    if settings.nats_ca_file is None:
        return None
    return ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH,
                                      cafile=str(settings.nats_ca_file))


async def log_errors(error: Exception) -> None:
    """nats-py's error callback: permission violations must never pass silently."""
    text = str(error)
    if "permissions violation" in text.lower() or "authorization" in text.lower():
        log.error("NATS refused an operation", extra={"error": text})
    else:
        log.warning("NATS connection error", extra={"error": f"{type(error).__name__}: {text}"})


def build_broker(settings: RuntimeSettings, *, name: str) -> NatsBroker:
    """A FastStream broker for the process `name` (its identity in the permission matrix)."""
    security = None
    if (seed := read_seed(settings, name)) is not None:
        security = NatsNKey.from_seed(seed, ssl_context=tls_context(settings),
                                      tls_hostname=settings.nats_tls_hostname)
    # Servers are fixed when the broker is built (FastStream's connect() takes no URL).
    return NatsBroker(
        settings.nats_servers,
        name=name,
        security=security,
        inbox_prefix=inbox_prefix(name),
        error_cb=log_errors,
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


async def connect(settings: RuntimeSettings, *, name: str, **options) -> NatsClient:
    """A plain nats-py connection for the identity `name` (the CLI, benches, tests)."""
    tls = tls_context(settings)
    return await nats.connect(
        settings.nats_servers, name=name, inbox_prefix=inbox_prefix(name),
        nkeys_seed_str=read_seed(settings, name),
        tls=tls, tls_hostname=settings.nats_tls_hostname,
        connect_timeout=settings.nats_connect_timeout_s, error_cb=log_errors, **options)


def jetstream(nc: NatsClient, identity: str, **options) -> JetStreamContext:
    """JetStream as `identity` reaches it: the operator inside the JetStream account, every
    other identity through its account's imports, under their prefix. A connection that
    signed in with no credential (a server run without authorization, for development)
    is in the server's one default account, where JetStream answers at `$JS.API`."""
    # nats-py keeps what the connection signed in with, with no public accessor.
    signed_in = any((nc._user_credentials, nc._nkeys_seed, nc._nkeys_seed_str))
    return nc.jetstream(prefix=api_prefix(identity) if signed_in else API, **options)
