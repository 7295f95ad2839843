"""Use cases of prompt_service: optimise a prompt, record what the user kept, and give
up on a command whose deliveries ran out. Dependencies come in through the constructor.

Redelivery is safe: a finished job is not run again, and events carry message ids
derived from the job, so a retry that publishes again is dropped by the stream.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Annotated, Protocol

from opentelemetry import metrics
from pydantic import Field, TypeAdapter, ValidationError

from contracts.base import Id
from contracts.jobs import CancelJob, FailureCode, JobError, JobFailed, JobKind, JobState, JobStatus
from contracts.prompt import (
    OptimizePrompt,
    PromptDecisionRecorded,
    PromptOptimized,
    RecordPromptDecision,
)
from prompt_service.decisions import decide
from prompt_service.engine import Optimization, PromptRequest, UnknownStyle
from terra.events import EventPublisher
from terra.jobs import JobStore
from terra.worker import PermanentFailure

log = logging.getLogger(__name__)

PromptCommand = TypeAdapter(
    Annotated[OptimizePrompt | RecordPromptDecision | CancelJob, Field(discriminator="type")]
)
_ID = TypeAdapter(Id)
_ENVELOPE = {"message_id", "correlation_id", "occurred_at", "type", "user_id"}


class AsyncOptimizer(Protocol):
    async def optimize(self, request: PromptRequest) -> Optimization: ...


@dataclass
class PromptHandlers:
    optimizer: AsyncOptimizer
    jobs: JobStore
    events: EventPublisher

    def __post_init__(self) -> None:
        self._decisions = metrics.get_meter("terra.prompt").create_counter(
            "terra.prompt.decisions", description="What users kept of optimised prompts."
        )

    async def handle(self, body: bytes) -> None:
        try:
            command = PromptCommand.validate_json(body)
        except ValidationError as exc:
            await self._refuse(body, f"invalid command: {_fields(exc)}")
            raise PermanentFailure(str(exc)) from exc
        if isinstance(command, OptimizePrompt):
            await self.optimize(command)
        elif isinstance(command, RecordPromptDecision):
            await self.record_decision(command)
        else:
            # Prompt jobs finish in milliseconds: nothing is left to cancel by the time
            # a cancel command could arrive.
            log.info("cancel ignored for a prompt job", extra={"job_id": command.job_id})

    async def optimize(self, command: OptimizePrompt) -> None:
        job = await self.jobs.get(command.job_id)
        if job is not None and (job.user_id != command.user_id or job.status.is_terminal):
            return  # done before (a redelivery), or someone else's job id: nothing to do
        request = PromptRequest(command.prompt, command.style, command.trigger_word,
                                command.variants)
        try:
            result = await self.optimizer.optimize(request)
        except UnknownStyle as exc:
            await self._refuse(command.model_dump_json().encode(), str(exc))
            raise PermanentFailure(str(exc)) from exc
        event = PromptOptimized(
            message_id=f"{command.job_id}-optimized",
            correlation_id=command.correlation_id,
            user_id=command.user_id,
            job_id=command.job_id,
            original=result.original,
            optimized=result.optimized,
            variants=result.variants,
            analysis=result.analysis,
            changes=result.changes,
            tokens=result.tokens,
            warnings=result.warnings,
            engine=result.engine,
            language=result.language,
        )
        # Event first, state second: a crash in between redelivers the command, which runs
        # again (deterministically) and publishes the same message id, which the stream drops.
        await self.events.publish(event)
        done = {"status": JobStatus.SUCCEEDED, "progress": 1.0,
                "result": event.model_dump(mode="json", exclude=_ENVELOPE)}
        # A job of milliseconds is recorded once, finished; no "running" write before it.
        if job is None and await self.jobs.create(JobState(
                job_id=command.job_id, user_id=command.user_id, kind=JobKind.PROMPT, **done)):
            return
        await self.jobs.update(command.job_id, lambda s: s.model_copy(update=done))

    async def record_decision(self, command: RecordPromptDecision) -> None:
        job = await self.jobs.get(command.job_id)
        if job is None or job.user_id != command.user_id or job.status is not JobStatus.SUCCEEDED:
            raise PermanentFailure(f"no finished prompt job {command.job_id} for this user")
        decision, final = decide(
            command.final_prompt,
            original=job.result["original"],
            optimized=job.result["optimized"],
            variants=job.result.get("variants", []),
        )
        await self.events.publish(PromptDecisionRecorded(
            message_id=f"{command.message_id[:50]}-recorded",
            correlation_id=command.correlation_id,
            user_id=command.user_id,
            job_id=command.job_id,
            decision=decision,
            final_prompt=final,
        ))
        await self.jobs.update(command.job_id, lambda s: s.model_copy(update={
            "result": {**s.result, "decision": decision.value, "final_prompt": final}}))
        self._decisions.add(1, {"decision": decision.value})

    async def dead_letter(self, body: bytes) -> None:
        """Deliveries ran out: the job failed, and its owner hears why."""
        await self._refuse(body, "the prompt service failed on this prompt several times",
                           code=FailureCode.DELIVERY_EXHAUSTED)

    async def _refuse(self, body: bytes, reason: str,
                      code: FailureCode = FailureCode.INVALID_INPUT) -> None:
        ids = _ids(body)
        if ids is None:
            log.error("unattributable command dropped", extra={"reason": reason})
            return
        job_id, user_id, correlation_id = ids
        if await self.jobs.get(job_id) is None:
            await self.jobs.create(JobState(job_id=job_id, user_id=user_id,
                                            kind=JobKind.PROMPT, status=JobStatus.QUEUED))
        await self._fail(job_id, user_id, code, reason, correlation_id)

    async def _fail(self, job_id: str, user_id: str, code: FailureCode, reason: str,
                    correlation_id: str) -> None:
        current = await self.jobs.get(job_id)
        if current is None or current.user_id != user_id or current.status.is_terminal:
            return
        await self.jobs.update(job_id, lambda s: s.model_copy(update={
            "status": JobStatus.FAILED, "error": JobError(code=code, reason=reason)}))
        await self.events.publish(JobFailed(
            message_id=f"{job_id}-failed", correlation_id=correlation_id, user_id=user_id,
            job_id=job_id, kind=JobKind.PROMPT, code=code, reason=reason))


def _fields(exc: ValidationError) -> str:
    return ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors())


def _ids(body: bytes) -> tuple[str, str, str] | None:
    """job id, user id and correlation id of a command too broken to validate, if any."""
    try:
        raw = json.loads(body)
        job_id, user_id = _ID.validate_python(raw["job_id"]), _ID.validate_python(raw["user_id"])
    except (ValueError, KeyError, TypeError):  # ValidationError is a ValueError
        return None
    correlation_id = raw.get("correlation_id")
    if not isinstance(correlation_id, str) or not 0 < len(correlation_id) <= 128:
        correlation_id = job_id
    return job_id, user_id, correlation_id
