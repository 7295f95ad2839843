"""Request/reply with notifier_service over NATS, and its failures as HTTP problems."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import Field

from contracts.base import Message
from contracts.notifications import NotifierErrorCode, NotifierFailure
from contracts.topology import NotifierRpc
from gateway.problems import Problem, field_errors
from gateway.rpc import RETRY_AFTER_S, ServiceClient

_STATUS = {
    NotifierErrorCode.INVALID_REQUEST: (422, "validation-error"),
    NotifierErrorCode.NOT_FOUND: (404, "not-found"),
    NotifierErrorCode.LIMIT_REACHED: (409, "limit-reached"),
    NotifierErrorCode.UNAVAILABLE: (503, "unavailable"),
}


def failure_to_problem(failure: NotifierFailure, fields: dict[str, str] | None = None) -> Problem:
    """A refusal naming a field is shaped like a validation error (`errors`), so clients
    show it next to that field; `fields` renames it where the body names it otherwise."""
    status, slug = _STATUS.get(failure.code, (503, "unavailable"))
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}
    extensions: dict[str, Any] = {}
    if failure.field is not None or status == 422:
        field = failure.field or ""  # empty: the body as a whole
        extensions["errors"] = field_errors((fields or {}).get(field, field),
                                            failure.detail, failure.code.value)
    return Problem(status, slug, failure.detail, headers=headers, code=failure.code.value,
                   **extensions)


@cache
def _or_failure(reply_type: type[Message]) -> Any:
    return Annotated[reply_type | NotifierFailure, Field(discriminator="type")]


class NotifierClient(ServiceClient):
    service = "notifier_service"
    unavailable = "The notification service is not answering; try again shortly."

    async def call(self, subject: NotifierRpc, request: Message, reply_type: type[Message], *,
                   fields: dict[str, str] | None = None) -> Any:
        """Send `request`, return its `reply_type` answer; a NotifierFailure is raised as a
        Problem (`fields`: see `failure_to_problem`)."""
        reply = await self._ask(subject, request, _or_failure(reply_type))
        if isinstance(reply, NotifierFailure):
            raise failure_to_problem(reply, fields)
        return reply
