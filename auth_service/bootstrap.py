"""auth_service's one wiring place: its use cases from their dependencies (tests pass
fakes), and the requests they answer.

Each request subject carries one request model and has one use case; `answer` decodes,
runs it and turns every failure into an `AuthFailure`, so callers always get a reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.auth import transport
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import ValidationError

from auth_service.config import AuthSettings
from auth_service.domain import AuthError
from auth_service.google import CachingRequest, GoogleVerifier
from auth_service.handlers import AuthHandlers
from auth_service.passwords import PasswordHasher
from auth_service.repository import RefreshTokenStore, UserRepository
from auth_service.throttle import LoginThrottle, SignupThrottle
from auth_service.tokens import TokenIssuer, load_private_key, load_public_key
from contracts.auth import (
    AuthErrorCode,
    AuthFailure,
    ChangePassword,
    DeleteAccountRequest,
    GetSigningKeys,
    GetUser,
    LoginWithGoogle,
    LoginWithPassword,
    LogoutRequest,
    RefreshTokens,
    Register,
)
from contracts.base import Message
from contracts.permissions import account_of
from contracts.topology import AUTH, AUTH_QUEUE_GROUP, GATEWAY, AuthRpc
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import fields_of
from terra.nats.connection import jetstream
from terra.nats.events import EventPublisher
from terra.records.revocations import Revocations
from terra.runtime import requests
from terra.runtime.service import Responder, ServiceParts

RequestT = TypeVar("RequestT", bound=Message)

# Each request subject, the model it carries (a retired version beside the current one
# where a message changed), and the use case that answers it.
ROUTES: tuple[tuple[AuthRpc, Any, str], ...] = (
    (AuthRpc.REGISTER, Register, "register"),
    (AuthRpc.LOGIN_PASSWORD, LoginWithPassword, "login_password"),
    (AuthRpc.LOGIN_GOOGLE, LoginWithGoogle, "login_google"),
    (AuthRpc.REFRESH, RefreshTokens, "refresh"),
    (AuthRpc.LOGOUT, LogoutRequest, "logout"),
    (AuthRpc.GET_USER, GetUser, "get_user"),
    (AuthRpc.DELETE_ACCOUNT, DeleteAccountRequest, "delete_account"),
    (AuthRpc.CHANGE_PASSWORD, ChangePassword, "change_password"),
    (AuthRpc.SIGNING_KEYS, GetSigningKeys, "signing_keys"),
)


def build_token_issuer(settings: AuthSettings) -> TokenIssuer:
    return TokenIssuer(
        load_private_key(settings.signing_key.get_secret_value()),
        issuer=settings.issuer,
        audience=settings.audience,
        ttl_s=settings.access_token_ttl_s,
        previous_keys=tuple(load_public_key(pem) for pem in settings.previous_public_keys),
    )


async def build_handlers(
    js: JetStreamContext,
    settings: AuthSettings,
    *,
    google_request: transport.Request | None = None,
) -> AuthHandlers:
    return AuthHandlers(
        users=await UserRepository.open(js),
        refresh_tokens=await RefreshTokenStore.open(js),
        hasher=PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        issuer=build_token_issuer(settings),
        google=GoogleVerifier(
            settings.google_client_ids,
            certs_url=settings.google_certs_url,
            request=google_request or CachingRequest(timeout_s=settings.google_http_timeout_s),
        ),
        throttle=await LoginThrottle.open(
            js,
            key_secret=settings.throttle_key_secret(),
            window_s=settings.login_window_s,
            max_per_pair=settings.login_max_failures_per_email,
            max_per_address=settings.login_max_failures_per_address,
            slowdown_after=settings.login_slowdown_after_failures,
            slowdown_first_delay_s=settings.login_slowdown_first_delay_s,
            slowdown_max_delay_s=settings.login_slowdown_max_delay_s,
        ),
        signups=await SignupThrottle.open(
            js,
            key_secret=settings.throttle_key_secret(),
            window_s=settings.registration_window_s,
            max_per_address=settings.registration_max_per_address,
        ),
        events=EventPublisher(js),
        refresh_token_ttl_s=settings.refresh_token_ttl_s,
        revocations=await Revocations.open(js),
        deleted_accounts=await DeletedAccounts.open(js),
    )


class AuthFailures:
    """How auth_service refuses: every failure is an `AuthFailure` with its code."""

    refusal = AuthError

    def invalid(self, model: Any, error: ValidationError) -> AuthFailure:
        return AuthFailure(code=AuthErrorCode.INVALID_REQUEST,
                           detail=f"Invalid fields: {fields_of(error)}")

    def refused(self, error: AuthError, request: Message) -> AuthFailure:
        return AuthFailure(code=error.code, detail=error.detail,
                           retry_after_s=error.retry_after_s,
                           correlation_id=request.correlation_id)

    def unavailable(self, request: Message) -> AuthFailure:
        return AuthFailure(code=AuthErrorCode.UNAVAILABLE,
                           detail="The auth service could not complete the request; "
                           "retry later.", correlation_id=request.correlation_id)


FAILURES = AuthFailures()


async def answer(model: Any, body: bytes,
                 use_case: Callable[[RequestT], Awaitable[Message]]) -> Message:
    """Decode, run and reply: the success model or an `AuthFailure`, never an exception."""
    return await requests.answer(model, body, use_case, FAILURES)


async def bootstrap(connection: NatsClient, settings: AuthSettings, *,
                    google_request: transport.Request | None = None) -> ServiceParts:
    handlers = await build_handlers(jetstream(connection, AUTH), settings,
                                    google_request=google_request)
    return ServiceParts(
        # Only the gateway asks (contracts/permissions.py exports these to its account).
        responders=[Responder(subject,
                              requests.answerer(model, getattr(handlers, use_case), FAILURES),
                              AUTH_QUEUE_GROUP, callers=(account_of(GATEWAY),))
                    for subject, model, use_case in ROUTES],
        max_concurrent_requests=settings.max_concurrent_requests)
