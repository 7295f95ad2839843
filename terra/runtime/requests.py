"""Answering a request (request/reply over NATS): decode its bytes into the request model,
run the use case under the request's correlation id, and reply with the success model or
the service's failure message, never an exception: the caller is waiting for a reply.

Each service says how its failures look (`Failures`): bad input, a refusal its use cases
raise on purpose (`refusal`), and anything else (logged with its stack: a bug or an
outage, answered as "unavailable").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from contracts.base import Message
from terra.runtime import logs

log = logging.getLogger(__name__)

UseCase = Callable[[Any], Awaitable[Message]]


class Failures(Protocol):
    refusal: type[Exception]  # what the use cases raise to refuse a request

    def invalid(self, model: Any, error: ValidationError) -> Message: ...

    def refused(self, error: Exception, request: Message) -> Message: ...

    def unavailable(self, request: Message) -> Message: ...


async def answer(model: Any, body: bytes, use_case: UseCase, failures: Failures) -> Message:
    """Decode (`model`: a message class, or a union of its versions), run, and reply."""
    try:
        request = _adapter(model).validate_json(body)
    except ValidationError as exc:
        return failures.invalid(model, exc)
    token = logs.correlation_id.set(request.correlation_id)
    try:
        return await use_case(request)
    except failures.refusal as exc:
        return failures.refused(exc, request)
    except Exception:
        log.exception("request failed", extra={"request_type": request.type})
        return failures.unavailable(request)
    finally:
        logs.correlation_id.reset(token)


def answerer(model: Any, use_case: UseCase,
             failures: Failures) -> Callable[[bytes], Awaitable[bytes]]:
    """What a `Responder` calls: the request's bytes in, the reply's bytes out."""
    async def answer_bytes(body: bytes) -> bytes:
        return (await answer(model, body, use_case, failures)).model_dump_json().encode()

    return answer_bytes


@cache
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)
