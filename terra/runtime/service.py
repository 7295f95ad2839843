"""How every NATS-driven service runs: connect, check what it uses, build its handlers
from its bootstrap, serve.

`service_app` is the one `serve()` of every service: it answers the service's requests
(request/reply in a queue group), runs each consumer's pull loop and every other
long-lived loop under one `Supervisor`, writes the process's heartbeat, and stops in
order on SIGTERM: stop taking requests and pulling, give work in hand the grace period,
hand back what is left, withdraw the heartbeat, drain the connection. A supervisor that
gives up ends the process non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient

from contracts.topology import ConsumerSpec
from terra.nats.connection import build_broker, jetstream
from terra.nats.faults import BROKER_ERRORS
from terra.nats.provisioning import require_provisioned
from terra.records.objects import ObjectStorage
from terra.runtime import supervise
from terra.runtime.liveness import Heartbeat, WorkLoad
from terra.runtime.logs import setup_logging
from terra.runtime.supervise import Supervisor
from terra.runtime.telemetry import flush_spans, setup_tracing
from terra.runtime.worker import Handle, PullConsumer, consuming, watch_dead_letters
from terra.settings import RuntimeSettings

log = logging.getLogger(__name__)

REQUEST_INFO = "Nats-Request-Info"  # set by the server on a request from another account


@dataclass
class Consumer:
    """A durable consumer this service pulls, and what handles (and settles) a message."""

    spec: ConsumerSpec
    handle: Handle
    concurrency: int = 1


@dataclass
class Responder:
    """Requests on `subject` (in a queue group: one replica answers each) and what answers
    them: the request's bytes in, the reply's bytes out (it never raises).

    Only a request is answered: a message with a reply subject, sent from one of the
    `callers` accounts, as the server attests (`Nats-Request-Info`). Anything else that
    reaches the subject (a JetStream API answer someone aimed here, a delivery) is
    dropped unread: the broker's say-so on the subject alone is not trusted."""

    subject: str
    answer: Callable[[bytes], Awaitable[bytes]]
    queue: str
    callers: tuple[str, ...]

    def refuses(self, msg) -> str | None:
        """Why `msg` is no request of ours to answer; None when it is one."""
        if not msg.reply:
            return "no reply subject"
        info = (msg.headers or {}).get(REQUEST_INFO)
        try:
            account = json.loads(info).get("acc") if info else None
        except (ValueError, AttributeError):
            account = None
        if account not in self.callers:
            return f"not sent from {', '.join(self.callers)} (from {account!r})"
        return None


@dataclass
class ServiceParts:
    """What a service's bootstrap hands to `service_app`."""

    domains: tuple[str, ...] = ()  # the job kinds it serves, for liveness
    responders: list[Responder] = field(default_factory=list)
    max_concurrent_requests: int = 32
    consumers: list[Consumer] = field(default_factory=list)
    loops: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    dead_letters: dict[str, tuple[ConsumerSpec, Callable[[bytes], Awaitable[None]]]] = field(
        default_factory=dict)
    # Jobs held and in hand, and whether loops of its own (not consumers) are pulling.
    workload: Callable[[], WorkLoad] | None = None
    stop: Callable[[float], Awaitable[None]] | None = None  # before the consumers stop
    after_stop: Callable[[], Awaitable[None]] | None = None  # once nothing runs any more


Bootstrap = Callable[[NatsClient, ObjectStorage | None], Awaitable[ServiceParts]]


async def prepare_infrastructure(
    broker: NatsBroker,
    identity: str,
    *,
    storage: ObjectStorage | None = None,
) -> NatsClient:
    """Connect, and check that what this identity opens exists. Creating it is `terra
    provision`'s (an operator's) job: a service may read its resources' configuration,
    never change it."""
    connection = await broker.connect()
    await require_provisioned(connection, identity)
    if storage is not None:
        await storage.ping()
    log.info("infrastructure ready")
    return connection


def service_app(service: str, settings: RuntimeSettings, bootstrap: Bootstrap, *,
                uses_storage: bool = True,
                configure_process: bool = True,
                supervisor: Supervisor | None = None) -> FastStream:
    """The FastStream app of a service; `bootstrap` builds its parts once connected."""
    broker = build_broker(settings, name=service)
    app = FastStream(broker, logger=log)
    supervisor = supervisor or Supervisor()
    running: dict[str, object] = {}

    @app.on_startup
    async def start() -> None:
        if configure_process:
            setup_logging(settings, service)
            setup_tracing(settings, service)
        storage = ObjectStorage.from_settings(settings, service) if uses_storage else None
        connection = await prepare_infrastructure(broker, service, storage=storage)
        parts = await bootstrap(connection, storage)
        js = jetstream(connection, service)
        pulls = [PullConsumer(js, c.spec, c.handle, concurrency=c.concurrency,
                              fetch_timeout_s=settings.fetch_timeout_s)
                 for c in parts.consumers]
        for spec, on_dead_letter in parts.dead_letters.values():
            await watch_dead_letters(connection, js, spec, on_dead_letter, queue=service)
        answering = await answer_requests(connection, parts.responders,
                                          parts.max_concurrent_requests)

        def workload() -> WorkLoad:
            own = parts.workload() if parts.workload else WorkLoad(pulling=True)
            loops = {name: state.running for name, state in supervisor.loops.items()}
            pulling = own.pulling and supervisor.healthy and all(p.pulling for p in pulls)
            return WorkLoad(pulling=pulling, loops=loops, holding=own.holding,
                            running=own.running)

        heartbeat = await Heartbeat.open(js, service, parts.domains, workload,
                                         interval_s=settings.liveness_interval_s)
        running.update(parts=parts, pulls=pulls, heartbeat=heartbeat, answering=answering)
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
        await running["answering"].stop(grace)  # other replicas answer from now on
        parts: ServiceParts = running["parts"]
        if parts.stop is not None:
            await parts.stop(grace)
        await asyncio.gather(*(pull.stop(grace) for pull in running["pulls"]))
        await supervisor.stop()
        await running["heartbeat"].withdraw()
        if parts.after_stop is not None:
            await parts.after_stop()
        flush_spans()

    return app


class Answering:
    """A service's request subscriptions: each request answered in a task of its own, at
    most `limit` at once (a slow one never holds up the others)."""

    def __init__(self, limit: int) -> None:
        self._room = asyncio.Semaphore(limit)
        self._subscriptions: list = []
        self._in_flight: set[asyncio.Task] = set()

    def callback(self, responder: Responder):
        async def on_request(msg) -> None:
            task = asyncio.create_task(self._answer(responder, msg))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

        return on_request

    async def _answer(self, responder: Responder, msg) -> None:
        if (why := responder.refuses(msg)) is not None:
            log.warning("message dropped unanswered", extra={"subject": msg.subject,
                                                            "reason": why})
            return
        async with self._room:
            with consuming(msg):
                reply = await responder.answer(msg.data)
            if msg.reply:
                try:
                    await msg.respond(reply)
                except BROKER_ERRORS as exc:  # the caller times out and may retry
                    log.warning("reply not sent", extra={"subject": msg.subject,
                                                         "error": f"{type(exc).__name__}: {exc}"})

    async def stop(self, grace_s: float) -> None:
        """Withdraw interest first (the queue group routes new requests to the other
        replicas), then let the requests in hand finish."""
        for subscription in self._subscriptions:
            with contextlib.suppress(*BROKER_ERRORS):
                await subscription.drain()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_s)


async def answer_requests(nc: NatsClient, responders: list[Responder],
                          limit: int) -> Answering:
    answering = Answering(limit)
    for responder in responders:
        answering._subscriptions.append(await nc.subscribe(
            responder.subject, queue=responder.queue, cb=answering.callback(responder)))
    return answering


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


