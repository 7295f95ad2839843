"""FastAPI dependencies: each part of the gateway a route uses (one each, from the parts
`gateway.bootstrap` built), the authenticated caller (and the token itself), the client
address."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from contracts.auth import ClientContext
from gateway.admission.generation import GenerationAdmission
from gateway.admission.training import TrainingAdmission
from gateway.auth_client import AuthClient
from gateway.bootstrap import GatewayParts
from gateway.commands import CommandSender
from gateway.config import GatewaySettings
from gateway.events import EventHub
from gateway.notifier_client import NotifierClient
from gateway.problems import Problem
from gateway.readiness import Readiness
from gateway.security import Caller, InvalidToken, TokenVerifier
from gateway.tickets import WsTickets
from terra.jobs.store import JobStore
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from terra.records.rate_limits import SlidingWindowLimit
from terra.records.revocations import RevocationWatch

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/auth/login.")


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def`
# dependencies in a thread pool, a thread hand-off on every request. They take the
# connection (a request or a WebSocket) and read the part at each call, so a test may
# replace a part on `app.state.parts`.
def _parts(connection: HTTPConnection) -> GatewayParts:
    return connection.app.state.parts


async def settings_of(connection: HTTPConnection) -> GatewaySettings:
    return _parts(connection).settings


async def auth_of(connection: HTTPConnection) -> AuthClient:
    return _parts(connection).auth


async def verifier_of(connection: HTTPConnection) -> TokenVerifier:
    return _parts(connection).token_verifier


async def hub_of(connection: HTTPConnection) -> EventHub:
    return _parts(connection).hub


async def tickets_of(connection: HTTPConnection) -> WsTickets:
    return _parts(connection).tickets


async def revocations_of(connection: HTTPConnection) -> RevocationWatch:
    return _parts(connection).revocations


async def storage_of(connection: HTTPConnection) -> ObjectStorage:
    return _parts(connection).storage


async def jobs_of(connection: HTTPConnection) -> JobStore:
    return _parts(connection).jobs


async def models_of(connection: HTTPConnection) -> ModelStore:
    return _parts(connection).models


async def images_of(connection: HTTPConnection) -> ImageStore:
    return _parts(connection).images


async def commands_of(connection: HTTPConnection) -> CommandSender:
    return _parts(connection).commands


async def prompt_rate_of(connection: HTTPConnection) -> SlidingWindowLimit:
    return _parts(connection).prompt_rate


async def generation_admission(connection: HTTPConnection) -> GenerationAdmission:
    return _parts(connection).generation


async def training_admission(connection: HTTPConnection) -> TrainingAdmission:
    return _parts(connection).training


async def notifier_of(connection: HTTPConnection) -> NotifierClient:
    return _parts(connection).notifier


async def readiness_of(connection: HTTPConnection) -> Readiness:
    return _parts(connection).readiness


Settings = Annotated[GatewaySettings, Depends(settings_of)]
Auth = Annotated[AuthClient, Depends(auth_of)]
Verifier = Annotated[TokenVerifier, Depends(verifier_of)]
Hub = Annotated[EventHub, Depends(hub_of)]
SessionRevocations = Annotated[RevocationWatch, Depends(revocations_of)]
Tickets = Annotated[WsTickets, Depends(tickets_of)]
Storage = Annotated[ObjectStorage, Depends(storage_of)]
Jobs = Annotated[JobStore, Depends(jobs_of)]  # read under the caller's id
Models = Annotated[ModelStore, Depends(models_of)]
Images = Annotated[ImageStore, Depends(images_of)]
Commands = Annotated[CommandSender, Depends(commands_of)]
Notifier = Annotated[NotifierClient, Depends(notifier_of)]  # acts on the user named


async def get_bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials else None


BearerToken = Annotated[str | None, Depends(get_bearer_token)]


async def authenticate(verifier: TokenVerifier, token: str | None) -> Caller:
    """The caller the access token names, or a 401 problem."""
    try:
        return await verifier.verify(token)
    except InvalidToken as exc:
        raise Problem(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


async def get_caller(verifier: Verifier, token: BearerToken) -> Caller:
    return await authenticate(verifier, token)


CurrentUser = Annotated[Caller, Depends(get_caller)]


async def get_verified_token(caller: CurrentUser, token: BearerToken) -> str:
    """The caller's access token itself, verified, for requests that auth_service checks
    again (it acts on the account only for a live token of it)."""
    assert token is not None  # `get_caller` refused a request without one
    return token


VerifiedToken = Annotated[str, Depends(get_verified_token)]


async def get_client(request: Request, settings: Settings) -> ClientContext:
    address = request.client.host if request.client else None
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            # The last hop is the one our proxy appended; earlier ones are the client's word.
            address = forwarded.split(",")[-1].strip()
    return ClientContext(address=address, user_agent=request.headers.get("user-agent", "")[:512])


Client = Annotated[ClientContext, Depends(get_client)]
