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
from gateway.commands import job_id_for
from gateway.deps import Commands, CurrentUser, Jobs, Models, prompt_rate_of
from gateway.problems import Problem
from terra.jobs.store import JobStore
from terra.records.models import ModelStore
from terra.records.rate_limits import RateLimitExceeded, SlidingWindowLimit

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


async def within_prompt_rate(
    caller: CurrentUser, prompt_rate: Annotated[SlidingWindowLimit, Depends(prompt_rate_of)],
) -> None:
    """Each optimisation is an LLM call: a user gets `prompt_rate_limit` of them per
    window, counted across every gateway (`terra.records.rate_limits`)."""
    try:
        await prompt_rate.admit(rate_limit_key("prompt", caller.user_id))
    except RateLimitExceeded as exc:
        window = prompt_rate.window
        raise Problem(
            429, "rate-limited",
            f"At most {window.limit} prompt optimisations per {window.window_s:g} s; "
            f"retry in {exc.retry_after_s} s.",
            headers={"Retry-After": str(exc.retry_after_s)}) from exc


@router.get("/styles", response_model=list[StylePreset])
async def styles() -> tuple[StylePreset, ...]:
    """The style presets `style` may name."""
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
    models: Models,
    jobs: Jobs,
    commands: Commands,
    wait: Annotated[bool, Query(description="Answer with the result if it is ready within "
                                "a few seconds.")] = False,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Optimise a prompt for FLUX: 202 with the job (its result comes as an event), or
    with `?wait=true` the result itself when it is ready within a few seconds."""
    trigger_word = await _trigger_word(models, caller.user_id, body.for_model)
    job_id = job_id_for(caller.user_id, idempotency_key) or new_id()
    command = OptimizePrompt(
        message_id=job_id, job_id=job_id, user_id=caller.user_id, prompt=body.prompt,
        style=body.style, for_model=body.for_model, trigger_word=trigger_word,
        variants=body.variants,
    )
    if not wait:
        await commands.send(command)
        return JSONResponse(Accepted(job_id=job_id).model_dump(), status_code=202)
    fresh, payload = await commands.send_and_wait(caller.user_id, command, RESULT_TYPES,
                                                  value=job_id, unless_duplicate=True)
    if not fresh:  # a retried request: the job may be finished already
        payload = await _finished_result(jobs, caller.user_id, job_id)
    if payload is not None:
        return _result_response(job_id, payload)
    return JSONResponse(Accepted(job_id=job_id).model_dump(), status_code=202)


@router.post("/{job_id}/accept", status_code=status.HTTP_200_OK,
             responses={202: {"description": "Recorded later: the service was busy."}})
async def accept(job_id: Id, body: AcceptBody, caller: CurrentUser, jobs: Jobs,
                 commands: Commands) -> Response:
    """Record what you kept of the optimised prompt: unchanged, edited or rejected."""
    job = await jobs.get(caller.user_id, job_id, JobKind.PROMPT)
    if job is None or job.kind is not JobKind.PROMPT:
        raise Problem(404, "not-found", f"No prompt job {job_id}.")
    if job.status is not JobStatus.SUCCEEDED:
        raise Problem(409, "conflict", f"Prompt job {job_id} is {job.status.value}; "
                      "only a finished optimisation can be accepted.")
    command = RecordPromptDecision(job_id=job_id, user_id=caller.user_id,
                                   final_prompt=body.final_prompt)
    _, payload = await commands.send_and_wait(caller.user_id, command,
                                              {"prompt.decision_recorded.v1"}, value=job_id)
    if payload is None:
        return JSONResponse(Accepted(job_id=job_id).model_dump(), status_code=202)
    return JSONResponse({"job_id": job_id, "decision": payload["decision"],
                         "final_prompt": payload["final_prompt"]}, status_code=200)


async def _trigger_word(models: ModelStore, user_id: str, model_id: str | None) -> str | None:
    if model_id is None:
        return None
    model = await models.get(user_id, model_id)
    if model is None:
        raise Problem(404, "not-found", f"No model {model_id}.")
    if model.status is not ModelStatus.READY:
        raise Problem(409, "conflict", f"Model {model_id} is {model.status.value}, not ready.")
    return model.trigger_word


async def _finished_result(jobs: JobStore, user_id: str, job_id: str) -> dict | None:
    job = await jobs.get(user_id, job_id, JobKind.PROMPT)
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
