"""Sign-up, sign-in, token refresh, logout, and the caller's own account."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from contracts.auth import (
    DeleteAccount,
    DoneReply,
    GetUser,
    LoginWithGoogle,
    LoginWithPassword,
    Logout,
    RefreshTokens,
    Register,
    TokenPair,
    TokenReply,
    User,
    UserReply,
    UserResult,
)
from contracts.topology import AuthRpc
from gateway.deps import (
    Auth,
    BearerToken,
    Client,
    CurrentUser,
    SessionRevocations,
    VerifiedToken,
    Verifier,
    authenticate,
)

router = APIRouter(prefix="/api", tags=["accounts"])

# auth_service's throttles answer RATE_LIMITED with a wait; auth_client makes it a 429.
THROTTLED = {429: {"description": "Too many attempts from this network (or for this account "
                                  "from it); the `Retry-After` header says when to retry."}}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterBody(Body):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)
    display_name: str | None = Field(default=None, max_length=100)


class LoginBody(Body):
    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1024)
    google_id_token: str | None = Field(default=None, max_length=8192)

    @model_validator(mode="after")
    def _one_method(self) -> LoginBody:
        with_password = self.email is not None or self.password is not None
        if with_password == (self.google_id_token is not None):
            raise ValueError("send either {email, password} or {google_id_token}")
        if with_password and (not self.email or not self.password):
            raise ValueError("email and password are both required")
        return self


class RefreshBody(Body):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutBody(RefreshBody):
    everywhere: bool = Field(
        default=False, description="End every session of this account, on every device: "
        "access tokens issued until now are refused at once, refresh tokens at their next "
        "use. Signing in again afterwards works as usual. Requires this session's access "
        "token (`Authorization: Bearer`).")


class Tokens(BaseModel):
    user: User
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> Tokens:
        return cls(
            user=pair.user,
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
        )


class DeletionAccepted(BaseModel):
    status: str = "deletion_requested"
    detail: str = "Your account is closed; your photos, models and images are being erased."


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=Tokens,
             responses=THROTTLED)
async def register(body: RegisterBody, auth: Auth, client: Client) -> Tokens:
    request = Register(email=body.email, password=body.password,
                       display_name=body.display_name, client=client)
    return Tokens.of(await auth.call(AuthRpc.REGISTER, request, TokenReply))


@router.post("/auth/login", response_model=Tokens, responses=THROTTLED)
async def login(body: LoginBody, auth: Auth, client: Client) -> Tokens:
    if body.google_id_token is not None:
        request = LoginWithGoogle(id_token=body.google_id_token, client=client)
        return Tokens.of(await auth.call(AuthRpc.LOGIN_GOOGLE, request, TokenReply))
    request = LoginWithPassword(email=body.email, password=body.password, client=client)
    return Tokens.of(await auth.call(AuthRpc.LOGIN_PASSWORD, request, TokenReply))


@router.post("/auth/refresh", response_model=Tokens)
async def refresh(body: RefreshBody, auth: Auth, client: Client) -> Tokens:
    request = RefreshTokens(refresh_token=body.refresh_token, client=client)
    return Tokens.of(await auth.call(AuthRpc.REFRESH, request, TokenReply))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: LogoutBody, auth: Auth, verifier: Verifier,
                 revocations: SessionRevocations, token: BearerToken) -> Response:
    # One session ends with its refresh token alone (an expired access token must not keep
    # it open); all of them take a live access token too, which auth_service checks again.
    if body.everywhere:
        await authenticate(verifier, token)
    request = Logout(refresh_token=body.refresh_token, everywhere=body.everywhere,
                     access_token=token if body.everywhere else None)
    await auth.call(AuthRpc.LOGOUT, request, DoneReply)
    if body.everywhere:  # refused here before we answer (every other gateway: moments later)
        await revocations.sync()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=User)
async def me(caller: CurrentUser, auth: Auth) -> User:
    reply: UserReply = await auth.call(
        AuthRpc.GET_USER, GetUser(user_id=caller.user_id), UserResult
    )
    return reply.user


@router.delete("/me", status_code=status.HTTP_202_ACCEPTED, response_model=DeletionAccepted)
async def delete_me(caller: CurrentUser, token: VerifiedToken, auth: Auth,
                    revocations: SessionRevocations) -> DeletionAccepted:
    await auth.call(
        AuthRpc.DELETE_ACCOUNT, DeleteAccount(user_id=caller.user_id, access_token=token),
        DoneReply)
    # auth_service revoked the user's sessions before answering; every gateway's watch
    # hears of it within moments, this one before answering (its sockets here close).
    await revocations.sync()
    return DeletionAccepted()
