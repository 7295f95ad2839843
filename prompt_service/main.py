"""prompt_service's entrypoint: one pull subscriber on the prompt work queue."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsMessage

from contracts.topology import PROMPT_WORKERS
from prompt_service.config import LlmBackendKind, PromptSettings
from prompt_service.engine import OfflineEngine, Optimization, PromptRequest
from prompt_service.handlers import AsyncOptimizer, PromptHandlers
from terra.broker import build_broker
from terra.events import EventPublisher
from terra.jobs import JobStore
from terra.logs import setup_logging
from terra.service import prepare_infrastructure, run_app
from terra.telemetry import setup_tracing
from terra.worker import durable_pull, settle, watch_dead_letters

SERVICE = "prompt_service"
log = logging.getLogger(__name__)


class OfflineOnly:
    """The offline engine behind the async interface (it takes about a millisecond)."""

    def __init__(self, engine: OfflineEngine) -> None:
        self._engine = engine

    async def optimize(self, request: PromptRequest) -> Optimization:
        return self._engine.optimize(request)


def build_optimizer(settings: PromptSettings) -> AsyncOptimizer:
    offline = OfflineEngine()
    if settings.llm_backend is LlmBackendKind.NONE:
        return OfflineOnly(offline)
    from prompt_service.llm import LlmOptimizer, backend_from_settings

    backend = backend_from_settings(
        settings.llm_backend.value,
        url=settings.llm_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        model_path=settings.llm_model_path,
        device=settings.llm_device,
        dtype=settings.llm_dtype,
        timeout_s=settings.llm_timeout_s,
    )
    return LlmOptimizer(backend, offline, settings.llm_timeout_s)


def build_app(
    settings: PromptSettings | None = None,
    *,
    configure_process: bool = True,
    optimizer: AsyncOptimizer | None = None,
) -> FastStream:
    settings = settings or PromptSettings()
    broker = build_broker(settings, name=SERVICE)
    app = FastStream(broker, logger=log)
    handlers: list[PromptHandlers] = []  # built at start-up, before the subscriber binds

    @durable_pull(broker, PROMPT_WORKERS, title="prompt:commands",
                  batch_size=settings.prompt_batch_size, max_workers=settings.prompt_concurrency)
    async def on_command(msg: NatsMessage) -> None:
        await settle(msg, lambda: handlers[0].handle(msg.body))

    @app.on_startup
    async def start() -> None:
        if configure_process:
            setup_logging(settings, SERVICE)
            setup_tracing(settings, SERVICE)
        await prepare_infrastructure(broker, settings, consumers=[PROMPT_WORKERS])
        connection = await broker.connect()
        js = connection.jetstream()
        chosen = optimizer or build_optimizer(settings)
        if hasattr(chosen, "start"):
            await chosen.start()  # a local model loads now, not during the first request
        handlers[:] = [PromptHandlers(
            optimizer=chosen,
            jobs=await JobStore.open(js),
            events=EventPublisher(js),
        )]
        await watch_dead_letters(connection, PROMPT_WORKERS, handlers[0].dead_letter,
                                 queue=SERVICE)
        log.info("prompt_service ready", extra={"llm_backend": settings.llm_backend.value})

    @app.after_shutdown
    async def close_optimizer() -> None:
        if handlers and hasattr(handlers[0].optimizer, "aclose"):
            await handlers[0].optimizer.aclose()

    return app


def main() -> None:
    run_app(build_app())
