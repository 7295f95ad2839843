"""FastAPI dependencies: the runtime, the authenticated caller (and the token itself),
the client address."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contracts.auth import ClientContext
from gateway.problems import Problem
from gateway.runtime import GatewayRuntime
from gateway.security import Caller, InvalidToken

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/auth/login.")


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def`
# dependencies in a thread pool, a thread hand-off on every request.
async def get_runtime(request: Request) -> GatewayRuntime:
    return request.app.state.runtime


Runtime = Annotated[GatewayRuntime, Depends(get_runtime)]


async def get_bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials else None


BearerToken = Annotated[str | None, Depends(get_bearer_token)]


async def authenticate(runtime: GatewayRuntime, token: str | None) -> Caller:
    """The caller the access token names, or a 401 problem."""
    try:
        return await runtime.tokens.verify(token)
    except InvalidToken as exc:
        raise Problem(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


async def get_caller(runtime: Runtime, token: BearerToken) -> Caller:
    return await authenticate(runtime, token)


CurrentUser = Annotated[Caller, Depends(get_caller)]


async def get_verified_token(caller: CurrentUser, token: BearerToken) -> str:
    """The caller's access token itself, verified, for requests that auth_service checks
    again (it acts on the account only for a live token of it)."""
    assert token is not None  # `get_caller` refused a request without one
    return token


VerifiedToken = Annotated[str, Depends(get_verified_token)]


async def get_client(request: Request, runtime: Runtime) -> ClientContext:
    address = request.client.host if request.client else None
    if runtime.settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            # The last hop is the one our proxy appended; earlier ones are the client's word.
            address = forwarded.split(",")[-1].strip()
    return ClientContext(address=address, user_agent=request.headers.get("user-agent", "")[:512])


Client = Annotated[ClientContext, Depends(get_client)]
