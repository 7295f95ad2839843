"""What every NATS-driven service does at start: connect, provision, then serve.

FastStream's `app.run()` already turns SIGTERM/SIGINT into a graceful stop: subscribers
stop pulling, in-flight handlers get `shutdown_grace_s` to finish, the connection
drains, and anything still unacked returns to its stream after `ack_wait`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts.topology import ConsumerSpec
from terra.provisioning import provision
from terra.settings import RuntimeSettings
from terra.storage import ObjectStorage

log = logging.getLogger(__name__)


async def prepare_infrastructure(
    broker: NatsBroker,
    settings: RuntimeSettings,
    *,
    consumers: Iterable[ConsumerSpec] = (),
    storage: ObjectStorage | None = None,
) -> None:
    """Connect and provision before subscribers bind to their durable consumers."""
    connection = await broker.connect()
    report = await provision(connection, replicas=settings.nats_replicas, consumers=consumers)
    if storage is not None:
        await storage.ensure_buckets()
    log.info("infrastructure ready", extra={"provisioned": report.created})


def run_app(app: FastStream) -> None:
    try:
        import uvloop  # faster loop and socket I/O; installed with uvicorn[standard]
    except ImportError:
        asyncio.run(app.run())
    else:
        uvloop.run(app.run())


async def stop_taking_requests(broker: NatsBroker) -> None:
    """Drain core subscriptions before FastStream stops its subscribers.

    FastStream's stop first marks subscribers as not running and then waits for handlers
    in flight; a request that arrives in between is dropped and its caller times out.
    Draining first withdraws interest (the queue group routes new requests to the other
    replicas) and still hands over what was already delivered to this process.
    """
    for subscriber in broker.subscribers:
        subscription = getattr(subscriber, "subscription", None)
        if subscription is not None and not getattr(subscriber, "stream", None):
            await subscription.drain()
            subscriber.subscription = None  # drained: FastStream must not unsubscribe it again
