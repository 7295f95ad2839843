"""How every NATS-driven service runs: connect, provision, build its handlers, serve.

`worker_app` is the one `serve()` of the job services: it builds the service's parts
from its bootstrap, runs each consumer's pull loop and every other long-lived loop under
one `Supervisor`, writes the worker's heartbeat, and stops in order on SIGTERM: stop
pulling, give work in hand the grace period, hand back what is left, withdraw the
heartbeat, drain the connection. A supervisor that gives up ends the process non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient

from contracts.topology import ConsumerSpec
from terra import supervise
from terra.broker import build_broker
from terra.errors import ConfigurationError
from terra.liveness import Heartbeat, WorkLoad
from terra.logs import setup_logging
from terra.provisioning import verify_identity
from terra.settings import RuntimeSettings
from terra.storage import ObjectStorage
from terra.supervise import Supervisor
from terra.telemetry import setup_tracing
from terra.worker import Handle, PullConsumer, watch_dead_letters

log = logging.getLogger(__name__)


@dataclass
class Consumer:
    """A durable consumer this service pulls, and what handles (and settles) a message."""

    spec: ConsumerSpec
    handle: Handle
    concurrency: int = 1


@dataclass
class WorkerParts:
    """What a service's bootstrap hands to `worker_app`."""

    domains: tuple[str, ...]  # the job kinds it serves, for liveness
    consumers: list[Consumer] = field(default_factory=list)
    loops: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    dead_letters: dict[str, tuple[ConsumerSpec, Callable[[bytes], Awaitable[None]]]] = field(
        default_factory=dict)
    # Jobs held and in hand, and whether loops of its own (not consumers) are pulling.
    workload: Callable[[], WorkLoad] | None = None
    stop: Callable[[float], Awaitable[None]] | None = None  # before the consumers stop
    after_stop: Callable[[], Awaitable[None]] | None = None  # once nothing runs any more


Bootstrap = Callable[[NatsClient, ObjectStorage | None], Awaitable[WorkerParts]]


async def prepare_infrastructure(
    broker: NatsBroker,
    settings: RuntimeSettings,
    identity: str,
    *,
    storage: ObjectStorage | None = None,
) -> NatsClient:
    """Connect, and check that what this identity opens exists. Creating it is `terra
    provision`'s (an operator's) job: a service may read its resources' configuration,
    never change it."""
    connection = await broker.connect()
    missing = await verify_identity(connection, identity)
    if missing:
        raise ConfigurationError(
            f"{identity}: not provisioned: {', '.join(missing)}; run `terra provision` "
            "with the operator's credential")
    if storage is not None:
        await storage.ping()
    log.info("infrastructure ready")
    return connection


def worker_app(service: str, settings: RuntimeSettings, bootstrap: Bootstrap, *,
               uses_storage: bool = True,
               configure_process: bool = True,
               supervisor: Supervisor | None = None) -> FastStream:
    """The FastStream app of a job service; `bootstrap` builds its parts once connected."""
    broker = build_broker(settings, name=service)
    app = FastStream(broker, logger=log)
    supervisor = supervisor or Supervisor()
    running: dict[str, object] = {}

    @app.on_startup
    async def start() -> None:
        if configure_process:
            setup_logging(settings, service)
            setup_tracing(settings, service)
        storage = ObjectStorage.from_settings(settings) if uses_storage else None
        connection = await prepare_infrastructure(broker, settings, service, storage=storage)
        parts = await bootstrap(connection, storage)
        js = connection.jetstream()
        pulls = [PullConsumer(js, c.spec, c.handle, concurrency=c.concurrency,
                              fetch_timeout_s=settings.fetch_timeout_s)
                 for c in parts.consumers]
        for spec, on_dead_letter in parts.dead_letters.values():
            await watch_dead_letters(connection, spec, on_dead_letter, queue=service)

        def workload() -> WorkLoad:
            own = parts.workload() if parts.workload else WorkLoad(pulling=True)
            loops = {name: state.running for name, state in supervisor.loops.items()}
            pulling = own.pulling and supervisor.healthy and all(p.pulling for p in pulls)
            return WorkLoad(pulling=pulling, loops=loops, holding=own.holding,
                            running=own.running)

        heartbeat = await Heartbeat.open(js, service, parts.domains, workload,
                                         interval_s=settings.liveness_interval_s)
        running.update(parts=parts, pulls=pulls, heartbeat=heartbeat)
        for pull in pulls:
            supervisor.start(f"pull:{pull.name}", pull.run)
        for name, loop in parts.loops.items():
            supervisor.start(name, loop)
        supervisor.start("heartbeat", heartbeat.run)
        log.info(f"{service} ready", extra={"worker_id": heartbeat.worker_id,
                                             "consumers": [p.name for p in pulls]})

    @app.on_shutdown
    async def stop() -> None:
        if not running:
            return
        grace = settings.shutdown_grace_s
        supervisor.begin_stop()
        parts: WorkerParts = running["parts"]
        if parts.stop is not None:
            await parts.stop(grace)
        await asyncio.gather(*(pull.stop(grace) for pull in running["pulls"]))
        await supervisor.stop()
        await running["heartbeat"].withdraw()
        if parts.after_stop is not None:
            await parts.after_stop()

    return app


def run_app(app: FastStream) -> None:
    """Run until SIGTERM/SIGINT; exit non-zero when supervision gave up."""
    try:
        import uvloop  # faster loop and socket I/O; installed with uvicorn[standard]
    except ImportError:
        asyncio.run(app.run())
    else:
        uvloop.run(app.run())
    if supervise.exit_code:
        sys.exit(supervise.exit_code)


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
