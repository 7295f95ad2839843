"""Use cases of prompt_service: optimise a prompt, record what the user kept, and give
up on a command whose deliveries ran out. Dependencies come in through the constructor.

Redelivery is safe: the job lifecycle (`terra.jobs.lifecycle`) skips a finished job and sends
its ending again under the same message id, which the stream drops if it was stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Protocol

from opentelemetry import metrics
from pydantic import Field, TypeAdapter, ValidationError

from contracts.base import Event
from contracts.jobs import CancelJob, FailureCode, JobKind, JobState, JobStatus
from contracts.prompt import (
    OptimizePrompt,
    PromptDecisionRecorded,
    PromptOptimized,
    RecordPromptDecision,
)
from prompt_service.decisions import decide
from prompt_service.engine import Optimization, PromptRequest, UnknownStyle
from terra.jobs.lifecycle import JobFailure, JobLifecycle, JobRef, fields_of, ref_from_raw
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.runtime.worker import PermanentFailure

log = logging.getLogger(__name__)

PromptCommand = TypeAdapter(
    Annotated[OptimizePrompt | RecordPromptDecision | CancelJob, Field(discriminator="type")]
)
_ENVELOPE = {"message_id", "correlation_id", "occurred_at", "type", "user_id"}


class AsyncOptimizer(Protocol):
    async def optimize(self, request: PromptRequest) -> Optimization: ...


class PromptEvents:
    """A prompt job has no queued, started or cancelled events: it ends in milliseconds."""

    def queued(self, job: JobState) -> Event | None:
        return None

    def started(self, job: JobState) -> Event | None:
        return None

    def cancelled(self, job: JobState) -> Event:
        raise NotImplementedError("prompt jobs end before a cancel could reach them")


@dataclass
class PromptHandlers:
    optimizer: AsyncOptimizer
    lifecycle: JobLifecycle
    jobs: JobStore
    events: EventPublisher

    def __post_init__(self) -> None:
        self._decisions = metrics.get_meter("terra.prompt").create_counter(
            "terra.prompt.decisions", description="What users kept of optimised prompts."
        )

    async def handle(self, body: bytes, delivery: int = 1) -> None:
        try:
            command = PromptCommand.validate_json(body)
        except ValidationError as exc:
            await self._refuse(body, f"invalid command: {fields_of(exc)}")
            raise PermanentFailure(str(exc)) from exc
        if isinstance(command, OptimizePrompt):
            await self.optimize(command, delivery)
        elif isinstance(command, RecordPromptDecision):
            await self.record_decision(command)
        else:
            # Prompt jobs finish in milliseconds: nothing is left to cancel by the time
            # a cancel command could arrive.
            log.info("cancel ignored for a prompt job", extra={"job_id": command.job_id})

    async def optimize(self, command: OptimizePrompt, delivery: int = 1) -> None:
        ref = JobRef.of(command, JobKind.PROMPT)
        # A job of milliseconds is recorded once, when it ends: no queued or running write.
        if await self.lifecycle.receive(ref, delivery, create=False) is None:
            return  # done before (a redelivery), or someone else's job id: nothing to do

        async def work() -> None:
            request = PromptRequest(command.prompt, command.style, command.trigger_word,
                                    command.variants)
            try:
                result = await self.optimizer.optimize(request)
            except UnknownStyle as exc:
                raise JobFailure(FailureCode.INVALID_INPUT, str(exc)) from exc
            event = PromptOptimized(
                correlation_id=command.correlation_id, user_id=command.user_id,
                job_id=command.job_id, original=result.original, optimized=result.optimized,
                variants=result.variants, analysis=result.analysis, changes=result.changes,
                tokens=result.tokens, warnings=result.warnings, engine=result.engine,
                language=result.language)
            await self.lifecycle.succeed(
                ref, event, result=event.model_dump(mode="json", exclude=_ENVELOPE))

        await self.lifecycle.attempt(ref, work)

    async def record_decision(self, command: RecordPromptDecision) -> None:
        job = await self.jobs.get(command.user_id, command.job_id)
        if job is None or job.status is not JobStatus.SUCCEEDED:
            raise PermanentFailure(f"no finished prompt job {command.job_id} for this user")
        decision, final = decide(
            command.final_prompt,
            original=job.result["original"],
            optimized=job.result["optimized"],
            variants=job.result.get("variants", []),
        )
        # The record first: a client that hears the event finds it (a redelivery after a
        # crash in between writes the same values and publishes under the same id).
        await self.jobs.update(command.user_id, command.job_id, lambda s: s.model_copy(update={
            "result": {**s.result, "decision": decision.value, "final_prompt": final}}))
        await self.events.publish(PromptDecisionRecorded(
            message_id=f"{command.message_id[:50]}-recorded",
            correlation_id=command.correlation_id,
            user_id=command.user_id,
            job_id=command.job_id,
            decision=decision,
            final_prompt=final,
        ))
        self._decisions.add(1, {"decision": decision.value})

    async def erase_account(self, user_id: str) -> None:
        """A deleted account's prompt jobs (its prompts with them)."""
        await self.jobs.erase(user_id, JobKind.PROMPT)

    async def dead_letter(self, body: bytes) -> None:
        """Deliveries ran out: the job failed, and its owner hears why."""
        await self.lifecycle.dead_letter_raw(body)

    async def _refuse(self, body: bytes, reason: str) -> None:
        if (ref := ref_from_raw(body, JobKind.PROMPT)) is None:
            log.error("unattributable command dropped", extra={"reason": reason})
            return
        await self.lifecycle.fail(ref, FailureCode.INVALID_INPUT, reason)

