"""auth_service's entrypoint: the broker, the app and one thin subscriber per request.

Each subscriber decodes its request model, calls one use case and returns the reply;
`answer` turns every failure into an `AuthFailure`, so callers always get a reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from faststream.specification import AsyncAPI
from google.auth import transport
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
    DeleteAccount,
    GetSigningKeys,
    GetUser,
    LoginWithGoogle,
    LoginWithPassword,
    Logout,
    RefreshTokens,
    Register,
)
from contracts.base import Message
from contracts.topology import AUTH_QUEUE_GROUP, AuthRpc
from terra import logs
from terra.broker import build_broker
from terra.events import EventPublisher
from terra.logs import setup_logging
from terra.service import prepare_infrastructure, run_app, stop_taking_requests
from terra.telemetry import setup_tracing

SERVICE = "auth_service"
log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=Message)


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
    """The one wiring place: every dependency of the use cases is built here."""
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
    )


async def answer(
    model: type[RequestT], body: bytes, use_case: Callable[[RequestT], Awaitable[Message]]
) -> Message:
    """Decode, run, and reply: the success model or an `AuthFailure`, never an exception."""
    try:
        request = model.model_validate_json(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors())
        return AuthFailure(code=AuthErrorCode.INVALID_REQUEST, detail=f"Invalid fields: {fields}")
    token = logs.correlation_id.set(request.correlation_id)
    try:
        return await use_case(request)
    except AuthError as exc:
        return AuthFailure(
            code=exc.code,
            detail=exc.detail,
            retry_after_s=exc.retry_after_s,
            correlation_id=request.correlation_id,
        )
    except Exception:
        log.exception("request failed", extra={"request_type": request.type})
        return AuthFailure(
            code=AuthErrorCode.UNAVAILABLE,
            detail="The auth service could not complete the request; retry later.",
            correlation_id=request.correlation_id,
        )
    finally:
        logs.correlation_id.reset(token)


def _responder(
    model: type[Message], use_case: str, handlers: list[AuthHandlers]
) -> Callable[[NatsMessage], Awaitable[Message]]:
    async def respond(msg: NatsMessage) -> Message:
        return await answer(model, msg.body, getattr(handlers[0], use_case))

    respond.__name__ = use_case
    return respond


def build_app(
    settings: AuthSettings | None = None,
    *,
    configure_process: bool = True,
    google_request: transport.Request | None = None,
) -> FastStream:
    """The FastStream app. Tests pass `configure_process=False` to keep pytest's logging."""
    settings = settings or AuthSettings()
    broker: NatsBroker = build_broker(settings, name=SERVICE)
    app = FastStream(
        broker,
        specification=AsyncAPI(title="Terra auth_service", version="1.0.0"),
        logger=log,
    )
    handlers: list[AuthHandlers] = []  # filled at start-up, before subscribers bind

    # Each request subject, the model it carries, and the use case that answers it.
    routes: tuple[tuple[AuthRpc, type[Message], str], ...] = (
        (AuthRpc.REGISTER, Register, "register"),
        (AuthRpc.LOGIN_PASSWORD, LoginWithPassword, "login_password"),
        (AuthRpc.LOGIN_GOOGLE, LoginWithGoogle, "login_google"),
        (AuthRpc.REFRESH, RefreshTokens, "refresh"),
        (AuthRpc.LOGOUT, Logout, "logout"),
        (AuthRpc.GET_USER, GetUser, "get_user"),
        (AuthRpc.DELETE_ACCOUNT, DeleteAccount, "delete_account"),
        (AuthRpc.SIGNING_KEYS, GetSigningKeys, "signing_keys"),
    )
    for subject, model, use_case in routes:
        subscriber = broker.subscriber(
            subject,
            queue=AUTH_QUEUE_GROUP,
            max_workers=settings.max_concurrent_requests,
            title=f"auth:{subject.name.lower()}",
        )
        subscriber(_responder(model, use_case, handlers))

    @app.on_startup
    async def start() -> None:
        if configure_process:
            setup_logging(settings, SERVICE)
            setup_tracing(settings, SERVICE)
        await prepare_infrastructure(broker, settings, SERVICE)
        connection = await broker.connect()
        handlers[:] = [
            await build_handlers(connection.jetstream(), settings, google_request=google_request)
        ]
        log.info("auth_service ready", extra={"issuer": settings.issuer})

    @app.on_shutdown
    async def finish_in_flight() -> None:
        await stop_taking_requests(broker)

    return app


def main() -> None:
    run_app(build_app())
