"""The gateway's one wiring place: `create_app(settings)`."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from contracts import topology
from gateway import ws
from gateway.auth_client import AuthClient
from gateway.config import GatewaySettings
from gateway.correlation import CorrelationId
from gateway.events import EventHub
from gateway.limits import BodySizeLimit
from gateway.problems import install_problem_handlers
from gateway.routers import accounts, datasets, generation, health, jobs, models, prompts, training
from gateway.runtime import GatewayRuntime
from gateway.security import TokenVerifier
from gateway.server import redact_span
from terra.errors import StorageError
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.nats.connection import build_broker, jetstream
from terra.nats.events import EventPublisher
from terra.nats.provisioning import require_provisioned
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from terra.records.rate_limits import SlidingWindowLimit, Window
from terra.records.revocations import Revocations, RevocationWatch
from terra.runtime.supervise import Supervisor
from terra.runtime.telemetry import flush_spans

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        broker = build_broker(settings, name=topology.GATEWAY)
        await broker.start()  # no subscribers: connects, for publish and request/reply
        nc = broker.connection
        # Creating streams, consumers and buckets is `terra provision`'s (the operator's):
        # the gateway's credential may only read their configuration. It provisions every
        # consumer, so a command accepted before its worker first starts waits in one.
        await require_provisioned(nc, topology.GATEWAY)
        # Its own key, allowed only what contracts.storage_access grants the gateway: the
        # bucket is `terra provision`'s to create.
        storage = ObjectStorage.from_settings(settings, topology.GATEWAY)
        try:
            await storage.ping()
        except StorageError as exc:  # /ready reports it; the gateway still serves auth
            log.warning("object storage not ready", extra={"error": str(exc)})
        auth = AuthClient(broker, settings.auth_timeout_s)
        # Requests wait for NATS a bounded time (nats-py's default is 5 s per call, and a
        # stream leader election lasts seconds): then they answer 503, never hang.
        js = jetstream(nc, topology.GATEWAY, timeout=settings.nats_request_timeout_s)
        supervisor = Supervisor()
        hub = EventHub(nc, js, settings.ws_queue_size, supervisor=supervisor)
        # Revoked sessions (deleted accounts, "sign out everywhere"), from every gateway's
        # watch of one bucket: their tokens are refused and their sockets here closed.
        revocations = RevocationWatch(nc, js, await Revocations.open(js))
        revocations.on_revoked(
            lambda user_id, at: hub.end_sessions(user_id, issued_up_to=at.timestamp()))
        supervisor.start("revocation-watch", revocations.run)
        await hub.start()
        await revocations.wait_caught_up(5.0)  # else tokens are checked against the bucket
        app.state.runtime = runtime = GatewayRuntime(
            settings=settings,
            broker=broker,
            nc=nc,
            js=js,
            auth=auth,
            tokens=TokenVerifier(auth, settings.keys_refresh_min_interval_s, revocations),
            hub=hub,
            storage=storage,
            jobs=await JobStore.open(js),
            models=await ModelStore.open(js, list_timeout_s=2 * settings.nats_request_timeout_s),
            images=await ImageStore.open(js, list_timeout_s=2 * settings.nats_request_timeout_s),
            generation_slots=await QueueSlots.open(js, "generation"),
            events=EventPublisher(js, retry_for_s=settings.nats_request_timeout_s,
                                  ack_timeout_s=settings.nats_request_timeout_s),
            revocations=revocations,
            prompt_rate=await SlidingWindowLimit.open(
                js, topology.RATE_LIMITS_KV.bucket,
                Window(settings.prompt_rate_limit, settings.prompt_rate_window_s)),
        )
        try:
            yield
        finally:
            for check in runtime.ready_checks.values():
                check.cancel()
            await supervisor.stop()
            await broker.stop()
            flush_spans()

    app = FastAPI(
        title="Terra",
        version="0.1.0",
        summary="Personalised AI images: accounts, prompts, LoRA training, generation.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    # datasets before training: its fixed paths ahead of the `/api/training/{job_id}/...` ones.
    for router in (health.router, accounts.router, jobs.router, prompts.router,
                   datasets.router, training.router, models.router, generation.router,
                   generation.images, ws.router):
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=False,
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       per_path={"/api/training/upload": settings.max_upload_bytes})
    app.add_middleware(CorrelationId)

    if settings.tracing:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Span attributes carry the URL with its query string: `?token=` is rewritten.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready",
                                           server_request_hook=redact_span)
    return app
