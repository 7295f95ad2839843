"""Request/reply with auth_service over NATS, and its failures as HTTP problems."""

from __future__ import annotations

from typing import Any

from contracts.auth import AuthErrorCode, AuthFailure
from contracts.base import Message
from gateway.problems import Problem, field_errors
from gateway.rpc import ServiceClient

_STATUS = {
    AuthErrorCode.INVALID_REQUEST: (422, "validation-error"),
    AuthErrorCode.WEAK_PASSWORD: (422, "weak-password"),
    AuthErrorCode.EMAIL_TAKEN: (409, "email-taken"),
    AuthErrorCode.INVALID_CREDENTIALS: (401, "invalid-credentials"),
    # Not 401: the caller is signed in, and a client answers 401 by refreshing its token.
    AuthErrorCode.WRONG_PASSWORD: (403, "wrong-password"),
    AuthErrorCode.NO_PASSWORD: (409, "no-password"),
    # auth_service's own check of the caller's access token: the same answer as ours.
    AuthErrorCode.INVALID_ACCESS_TOKEN: (401, "unauthorized"),
    AuthErrorCode.INVALID_GOOGLE_TOKEN: (401, "invalid-google-token"),
    AuthErrorCode.INVALID_REFRESH_TOKEN: (401, "invalid-refresh-token"),
    AuthErrorCode.REFRESH_TOKEN_REUSED: (401, "refresh-token-reused"),
    AuthErrorCode.RATE_LIMITED: (429, "rate-limited"),
    AuthErrorCode.NOT_FOUND: (404, "not-found"),
    AuthErrorCode.UNAVAILABLE: (503, "unavailable"),
}

_DEFAULT_RETRY_AFTER_S = 60


# The request field each code is about, so clients show it next to that field.
_FIELDS = {AuthErrorCode.WEAK_PASSWORD: "password",
           AuthErrorCode.WRONG_PASSWORD: "current_password"}


def failure_to_problem(failure: AuthFailure, fields: dict[str, str] | None = None) -> Problem:
    """`fields` renames a code's field for a route whose body names it otherwise
    (`{"password": "new_password"}`)."""
    status, slug = _STATUS.get(failure.code, (503, "unavailable"))
    headers = {}
    if failure.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, failure.retry_after_s))
    elif status == 429:
        # A refusal always says when to come back, even from an auth_service that did not.
        headers["Retry-After"] = str(_DEFAULT_RETRY_AFTER_S)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    extensions = {}
    if (field := _FIELDS.get(failure.code)) is not None:
        # Shaped like a validation error, so clients show it next to the field.
        extensions["errors"] = field_errors((fields or {}).get(field, field),
                                            failure.detail, failure.code.value)
    return Problem(status, slug, failure.detail, headers=headers, code=failure.code.value,
                   **extensions)


class AuthClient(ServiceClient):
    service = "auth_service"
    unavailable = "The account service is not answering; try again shortly."

    async def call(self, subject: str, request: Message, reply_type: Any, *,
                   fields: dict[str, str] | None = None) -> Any:
        """Send `request`, return the success reply; an AuthFailure is raised as a Problem
        (`fields`: see `failure_to_problem`)."""
        reply = await self._ask(subject, request, reply_type)
        if isinstance(reply, AuthFailure):
            raise failure_to_problem(reply, fields)
        return reply
