"""The gateway's HTTP app: `create_app(settings)` puts together its middleware, routers and
lifespan; the parts its routes use come from `gateway.bootstrap` when it starts."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from gateway import console, ws
from gateway.apidocs import install_docs
from gateway.bootstrap import GatewayParts, bootstrap
from gateway.config import GatewaySettings
from gateway.correlation import CorrelationId
from gateway.limits import BodySizeLimit
from gateway.openapi import install_openapi
from gateway.openapi_glossary import API_DESCRIPTION
from gateway.problems import install_problem_handlers
from gateway.routers import (
    accounts,
    datasets,
    generation,
    health,
    jobs,
    models,
    notifications,
    prompts,
    training,
    webhooks,
)
from gateway.server import redact_span
from terra.runtime.telemetry import flush_spans

PartsFactory = Callable[[GatewaySettings], AbstractAsyncContextManager[GatewayParts]]


def create_app(settings: GatewaySettings | None = None, *,
               parts_from: PartsFactory = bootstrap) -> FastAPI:
    """The app; `parts_from` builds its parts for as long as it runs (tests pass fakes)."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            async with parts_from(settings) as parts:
                app.state.parts = parts
                yield
        finally:
            flush_spans()

    app = FastAPI(
        title="Terra",
        version="0.1.0",
        summary="Personalised AI images: accounts, prompts, LoRA training, generation.",
        lifespan=lifespan,
        # Served from a package's files below (`install_docs`), not a CDN: they work offline.
        docs_url=None,
        redoc_url=None,
    )
    install_openapi(app, description=API_DESCRIPTION)
    install_docs(app)
    install_problem_handlers(app)
    # datasets before training: its fixed paths ahead of the `/api/training/{job_id}/...` ones.
    for router in (health.router, accounts.router, jobs.router, prompts.router,
                   datasets.router, training.router, models.router, generation.router,
                   generation.images, jobs.mine, models.mine, datasets.mine,
                   generation.mine, notifications.router, webhooks.router, ws.router,
                   console.router):
        app.include_router(router)
    app.webhooks.include_router(webhooks.sent)  # described, not served
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # The refresh cookie (cookie mode), for the listed origins only; never with "*".
            allow_credentials="*" not in settings.cors_origins,
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
