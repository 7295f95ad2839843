"""prompt_service's one wiring place: handlers from their dependencies (tests pass fakes)."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from contracts.jobs import JobKind
from contracts.topology import PROMPT, PROMPT_WORKERS, account_cleanup_consumer
from prompt_service.config import LlmBackendKind, PromptSettings
from prompt_service.engine import OfflineEngine, Optimization, PromptRequest
from prompt_service.handlers import AsyncOptimizer, PromptEvents, PromptHandlers
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import JobLifecycle, erasing
from terra.jobs.store import JobStore
from terra.nats.connection import jetstream
from terra.nats.events import EventPublisher
from terra.runtime.service import Consumer, ServiceParts
from terra.runtime.worker import settle

ACCOUNT_CLEANUP = account_cleanup_consumer("prompt")


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


def build_handlers(jobs: JobStore, events: EventPublisher, optimizer: AsyncOptimizer, *,
                   deleted_accounts: DeletedAccounts | None = None) -> PromptHandlers:
    lifecycle = JobLifecycle(JobKind.PROMPT, jobs, events, PromptEvents(),
                             deleted_accounts=deleted_accounts)
    return PromptHandlers(optimizer=optimizer, lifecycle=lifecycle, jobs=jobs, events=events)


async def bootstrap(connection: NatsClient, settings: PromptSettings, *,
                    optimizer: AsyncOptimizer | None = None) -> ServiceParts:
    js = jetstream(connection, PROMPT)
    chosen = optimizer or build_optimizer(settings)
    if hasattr(chosen, "start"):
        await chosen.start()  # a local model loads now, not during the first request
    handlers = build_handlers(await JobStore.open(js, [JobKind.PROMPT]), EventPublisher(js), chosen,
                              deleted_accounts=await DeletedAccounts.open(js))

    async def on_command(msg) -> None:
        await settle(msg, lambda: handlers.handle(msg.data, msg.metadata.num_delivered))

    async def close() -> None:
        if hasattr(chosen, "aclose"):
            await chosen.aclose()

    return ServiceParts(
        domains=(JobKind.PROMPT.value,),
        consumers=[Consumer(PROMPT_WORKERS, on_command, settings.prompt_concurrency),
                   Consumer(ACCOUNT_CLEANUP, erasing(handlers.erase_account,
                                                     settings.erasure_second_pass_s))],
        dead_letters={"commands": (PROMPT_WORKERS, handlers.dead_letter)},
        after_stop=close)
