"""Prompt optimisation: styles, optimise (202, or the result with ?wait=true), accept."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from contracts.ids import Id, new_id
from contracts.jobs import JobKind, JobStatus
from contracts.prompt import (
    PROMPT_MAX_CHARS,
    STYLE_NAMES,
    STYLE_PRESETS,
    OptimizePrompt,
    RecordPromptDecision,
    StylePreset,
)
from contracts.topology import rate_limit_key
from contracts.training import ModelStatus
from gateway.commands import job_id_for, send, wait_for_event
from gateway.deps import CurrentUser, Runtime
from gateway.problems import Problem
from gateway.runtime import GatewayRuntime
from terra.records.rate_limits import RateLimitExceeded

router = APIRouter(prefix="/api/prompt", tags=["prompt"])

PromptText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=PROMPT_MAX_CHARS)
]
RESULT_TYPES = {"prompt.optimized.v1", "job.failed.v1"}


class OptimizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: PromptText
    style: str | None = Field(default=None, description="A name from GET /api/prompt/styles.")
    for_model: Id | None = Field(default=None, description="One of your models: its trigger "
                                 "word is placed in the prompt.")
    variants: int = Field(default=1, ge=1, le=4)

    @field_validator("style")
    @classmethod
    def _known_style(cls, value: str | None) -> str | None:
        if value is not None and value not in STYLE_NAMES:
            raise ValueError(f"unknown style; choose from {', '.join(sorted(STYLE_NAMES))}")
        return value


class AcceptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    final_prompt: PromptText | None = Field(
        default=None, description="What you kept; leave out to accept the optimised prompt."
    )


class Accepted(BaseModel):
    job_id: str
    status: str = "queued"


def result_of(job_id: str, payload: dict) -> dict:
    """The REST shape of an optimisation result (the event minus its envelope)."""
    keep = ("original", "optimized", "variants", "analysis", "changes", "tokens", "warnings",
            "engine", "language")
    return {"job_id": job_id, **{key: payload.get(key) for key in keep}}


async def within_prompt_rate(caller: CurrentUser, runtime: Runtime) -> None:
    """Each optimisation is an LLM call: a user gets `prompt_rate_limit` of them per
    window, counted across every gateway (`terra.records.rate_limits`)."""
    try:
        await runtime.prompt_rate.admit(rate_limit_key("prompt", caller.user_id))
    except RateLimitExceeded as exc:
        window = runtime.prompt_rate.window
        raise Problem(
            429, "rate-limited",
            f"At most {window.limit} prompt optimisations per {window.window_s:g} s; "
            f"retry in {exc.retry_after_s} s.",
            headers={"Retry-After": str(exc.retry_after_s)}) from exc


@router.get("/styles", response_model=list[StylePreset])
async def styles() -> tuple[StylePreset, ...]:
    return STYLE_PRESETS


@router.post(
    "/optimize",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(within_prompt_rate)],
    responses={200: {"description": "The result, with ?wait=true when it came in time."},
               429: {"description": "Too many optimisations by this user lately; the "
                                    "`Retry-After` header says when to retry."}},
)
async def optimize(
    body: OptimizeBody,
    caller: CurrentUser,
    runtime: Runtime,
    wait: Annotated[bool, Query(description="Answer with the result if it is ready within "
                                "a few seconds.")] = False,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    trigger_word = await _trigger_word(runtime, caller.user_id, body.for_model)
    job_id = job_id_for(caller.user_id, idempotency_key) or new_id()
    command = OptimizePrompt(
        message_id=job_id, job_id=job_id, user_id=caller.user_id, prompt=body.prompt,
        style=body.style, for_model=body.for_model, trigger_word=trigger_word,
        variants=body.variants,
    )
    # Listen before sending, so a fast result cannot slip past.
    sub = runtime.hub.subscribe(caller.user_id, JobKind.PROMPT.value) if wait else None
    try:
        fresh = await send(runtime.broker, command,
                           timeout_s=runtime.settings.nats_request_timeout_s)
    except BaseException:
        if sub is not None:
            runtime.hub.unsubscribe(sub)
        raise
    if wait:
        payload = None
        if not fresh:  # a retried request: the job may be finished already
            runtime.hub.unsubscribe(sub)
            payload = await _finished_result(runtime, caller.user_id, job_id)
        else:
            payload = await wait_for_event(runtime.hub, caller.user_id, "prompt", job_id,
                                           RESULT_TYPES, runtime.settings.wait_timeout_s, sub)
        if payload is not None:
            return _result_response(job_id, payload)
    return JSONResponse(Accepted(job_id=job_id).model_dump(), status_code=202)


@router.post("/{job_id}/accept", status_code=status.HTTP_200_OK,
             responses={202: {"description": "Recorded later: the service was busy."}})
async def accept(job_id: Id, body: AcceptBody, caller: CurrentUser, runtime: Runtime) -> Response:
    """Record what you kept of the optimised prompt: unchanged, edited or rejected."""
    job = await runtime.jobs.get(caller.user_id, job_id, JobKind.PROMPT)
    if job is None or job.kind is not JobKind.PROMPT:
        raise Problem(404, "not-found", f"No prompt job {job_id}.")
    if job.status is not JobStatus.SUCCEEDED:
        raise Problem(409, "conflict", f"Prompt job {job_id} is {job.status.value}; "
                      "only a finished optimisation can be accepted.")
    command = RecordPromptDecision(job_id=job_id, user_id=caller.user_id,
                                   final_prompt=body.final_prompt)
    sub = runtime.hub.subscribe(caller.user_id, JobKind.PROMPT.value)
    try:
        await send(runtime.broker, command, timeout_s=runtime.settings.nats_request_timeout_s)
    except BaseException:
        runtime.hub.unsubscribe(sub)
        raise
    payload = await wait_for_event(runtime.hub, caller.user_id, "prompt", job_id,
                                   {"prompt.decision_recorded.v1"},
                                   runtime.settings.wait_timeout_s, sub)
    if payload is None:
        return JSONResponse(Accepted(job_id=job_id).model_dump(), status_code=202)
    return JSONResponse({"job_id": job_id, "decision": payload["decision"],
                         "final_prompt": payload["final_prompt"]}, status_code=200)


async def _trigger_word(runtime: GatewayRuntime, user_id: str, model_id: str | None) -> str | None:
    if model_id is None:
        return None
    model = await runtime.models.get(user_id, model_id)
    if model is None:
        raise Problem(404, "not-found", f"No model {model_id}.")
    if model.status is not ModelStatus.READY:
        raise Problem(409, "conflict", f"Model {model_id} is {model.status.value}, not ready.")
    return model.trigger_word


async def _finished_result(runtime: GatewayRuntime, user_id: str,
                           job_id: str) -> dict | None:
    job = await runtime.jobs.get(user_id, job_id, JobKind.PROMPT)
    if job is None or not job.status.is_terminal:
        return None
    if job.status is JobStatus.SUCCEEDED:
        return {"type": "prompt.optimized.v1", **job.result}
    return {"type": "job.failed.v1", "code": job.error.code.value if job.error else "internal",
            "reason": job.error.reason if job.error else ""}


def _result_response(job_id: str, payload: dict) -> Response:
    if payload["type"] == "job.failed.v1":
        raise Problem(422 if payload.get("code") == "invalid_input" else 502,
                      "optimization-failed", payload.get("reason") or "The optimisation failed.",
                      job_id=job_id, code=payload.get("code"))
    return JSONResponse(result_of(job_id, payload), status_code=200)
