"""RFC 9457 problem details for every error the gateway returns."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import nats.errors
import nats.js.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.refusals import (
    DatasetNotFound,
    JobAlreadyEnded,
    JobNotFound,
    ModelNotFound,
    ModelNotReady,
    Refused,
    TooManyGenerations,
    TrainingRunning,
)
from terra.errors import StorageError, TerraError

log = logging.getLogger("gateway")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://terra.dev/problems/"

# What NATS and object storage raise while they cannot answer right now (a stream leader
# election, a reconnect, a server away): the request may succeed when retried, so the
# answer is 503 with Retry-After, never 500. A NATS stream leader election takes 4-9 s.
DEPENDENCY_FAULTS: tuple[type[Exception], ...] = (
    TimeoutError,  # nats.errors.TimeoutError (and FlushTimeoutError) and asyncio's
    nats.js.errors.NoStreamResponseError,  # no stream leader to store or answer
    nats.js.errors.ServiceUnavailableError,  # JetStream "503" (its `.code` may be None)
    nats.js.errors.ServerError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    StorageError,
)
RETRY_AFTER_S = 5


class Problem(TerraError):
    """Raise from a route or dependency to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extensions = extensions


class FieldError(BaseModel):
    """One invalid field of a 422 (`errors`)."""

    field: str = Field(description="The field's dotted path in the body, query or path "
                       "(empty for the body as a whole).", examples=["password"])
    location: str | None = Field(description="Where the field is: body, query, path or "
                                 "header.", examples=["body"])
    message: str = Field(description="What is wrong, for a person.",
                         examples=["String should have at least 1 character"])
    code: str = Field(description="What is wrong, for a program (pydantic's error type, "
                      "or `weak_password`).", examples=["string_too_short"])


class RejectedFile(BaseModel):
    """A photo of an upload that was refused (`rejected`)."""

    filename: str = Field(description="The file's name as uploaded.", examples=["me-03.jpg"])
    reason: str = Field(description="Why it was refused.",
                        examples=["a near-duplicate of me-01.jpg"])


class ProblemDetails(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`). `type` names the
    problem; the members after `instance` appear on the problems that carry them."""

    # The schema of what `problem_response` writes, named `Problem` in the OpenAPI document.
    model_config = ConfigDict(title="Problem")

    type: str = Field(description="A URI naming the problem: "
                      f"`{TYPE_BASE}<slug>`.", examples=[f"{TYPE_BASE}not-found"])
    title: str = Field(description="A short summary of the problem type.",
                       examples=["Not Found"])
    status: int = Field(ge=400, le=599, description="The HTTP status, repeated.",
                        examples=[404])
    detail: str = Field(description="What went wrong with this request, for a person.",
                        examples=["No job 0f3c9a7e5b2d4c1a8e6f9d0b7a2c4e1f."])
    instance: str | None = Field(default=None, description="The request's path.",
                                 examples=["/api/jobs/0f3c9a7e5b2d4c1a8e6f9d0b7a2c4e1f"])
    errors: list[FieldError] | None = Field(
        default=None, description="422 `validation-error` and `weak-password`: each invalid "
        "field, to show next to it.")
    code: str | None = Field(
        default=None, description="Machine-readable reason: the account service's "
        "(`invalid_credentials`, `email_taken`, `rate_limited`, ...) on account routes, the "
        "job's failure code on `optimization-failed`.", examples=["invalid_credentials"])
    rejected: list[RejectedFile] | None = Field(
        default=None, description="422 `invalid-upload`: each refused photo and why.")
    reasons: list[str] | None = Field(
        default=None, description="503 `not-ready` (`/ready`): each reason it is not ready.",
        examples=[["no live worker for generation"]])
    workers: dict[str, int] | None = Field(
        default=None, description="503 `not-ready`: live workers per job domain.",
        examples=[{"prompt": 1, "training": 1, "generation": 0}])
    models: list[str] | None = Field(
        default=None, description="409 on deleting a photo set: the models still training "
        "on it.", examples=[["5b7e0c2a9d4f4e3b8a1c6d2e0f9a7b3c"]])
    job_id: str | None = Field(
        default=None, description="502 `optimization-failed`: the failed job.",
        examples=["3c29003f8a1b4c2d9e7f6a5b4c3d2e1f"])


def field_errors(field: str, message: str, code: str) -> list[dict[str, str]]:
    """A refusal about one body field, shaped like a validation error's `errors`, so
    clients show it next to that field."""
    return [{"field": field, "location": "body", "message": message, "code": code}]


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {
        "type": TYPE_BASE + slug,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **({"instance": instance} if instance else {}),
        **extensions,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


# Each admission refusal's answer: status, problem type, headers.
_REFUSALS: dict[type[Refused], tuple[int, str, dict[str, str]]] = {
    ModelNotFound: (404, "not-found", {}),
    DatasetNotFound: (404, "not-found", {}),
    JobNotFound: (404, "not-found", {}),
    JobAlreadyEnded: (409, "conflict", {}),
    ModelNotReady: (409, "conflict", {}),
    TrainingRunning: (409, "training-running", {}),
    TooManyGenerations: (429, "too-many-jobs", {"Retry-After": "5"}),
}

SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
         405: "method-not-allowed", 409: "conflict", 413: "payload-too-large",
         415: "unsupported-media-type", 422: "validation-error", 429: "rate-limited",
         503: "unavailable"}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.slug, exc.detail, title=exc.title, instance=request.url.path,
            headers=exc.headers, **exc.extensions,
        )

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        status, slug, headers = _REFUSALS[type(exc)]
        return problem_response(status, slug, str(exc), instance=request.url.path,
                                headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"] if part != "body"),
                "location": error["loc"][0] if error["loc"] else None,
                "message": error["msg"],
                "code": error["type"],
            }
            for error in exc.errors()
        ]
        fields = ", ".join(e["field"] or "body" for e in errors)
        return problem_response(
            422, "validation-error", f"Invalid request: {fields}.",
            title="Your request is not valid", instance=request.url.path, errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = SLUGS.get(exc.status_code, "http-error")
        return problem_response(
            exc.status_code, slug, str(exc.detail), instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    async def _dependency_fault(request: Request, exc: Exception) -> JSONResponse:
        log.warning("a dependency did not answer", extra={
            "path": request.url.path, "error": f"{type(exc).__name__}: {exc}"})
        what = "Object storage" if isinstance(exc, StorageError) else "The message broker"
        return problem_response(
            503, "unavailable", f"{what} is not answering right now; try again in a few "
            "seconds (a retry with the same Idempotency-Key names the same job).",
            title="Temporarily unavailable", instance=request.url.path,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for fault in DEPENDENCY_FAULTS:  # one handler; Starlette looks handlers up by class
        app.add_exception_handler(fault, _dependency_fault)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(
            500, "internal-error", "Something went wrong on our side; it has been logged.",
            instance=request.url.path,
        )
