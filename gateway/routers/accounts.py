"""Sign-up, sign-in, token refresh, logout, password change, and the caller's own account.

Browsers may keep the refresh token in an httpOnly cookie instead of the body
(`gateway.session_cookies`: the opt-in header, the cookies, the CSRF rules)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Header, Request, Response, status
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from contracts.auth import (
    ChangePassword,
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
    Settings,
    VerifiedToken,
    Verifier,
    authenticate,
)
from gateway.problems import Problem
from gateway.session_cookies import (
    COOKIE_MODE_HEADER,
    CSRF_HEADER,
    REFRESH_COOKIE,
    clear_session_cookies,
    csrf_matches,
    origin_allowed,
    set_session_cookies,
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


MAX_REFRESH_TOKEN_CHARS = 512


class RefreshBody(Body):
    refresh_token: str | None = Field(
        default=None, min_length=1, max_length=MAX_REFRESH_TOKEN_CHARS,
        description="The refresh token. Leave it out in cookie mode: the `terra_refresh` "
        "cookie is used, with the `X-CSRF-Token` header.")


class ChangePasswordBody(Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024, description="Follows the "
                              "registration rules (422 `weak-password` naming this field).")


class LogoutBody(RefreshBody):
    everywhere: bool = Field(
        default=False, description="End every session of this account, on every device: "
        "access tokens issued until now are refused at once, refresh tokens at their next "
        "use. Signing in again afterwards works as usual. Requires this session's access "
        "token (`Authorization: Bearer`).")


class Tokens(BaseModel):
    user: User
    access_token: str
    refresh_token: str | None = Field(description="Null in cookie mode (the `terra_refresh` "
                                      "cookie holds it).")
    token_type: str = "bearer"
    expires_in: int
    csrf_token: str | None = Field(
        default=None, description="Cookie mode only: send it as `X-CSRF-Token` when "
        "refreshing or signing out with the cookie (also in the `terra_csrf` cookie).")


# Cookie mode (`gateway.session_cookies`), as the routes take it.
CookieMode = Annotated[bool, Header(
    alias=COOKIE_MODE_HEADER, description="`1`: set the refresh token in the httpOnly "
    "`terra_refresh` cookie (Path=/api/auth) instead of the body (browsers).")]
RefreshCookie = Annotated[str | None, Cookie(
    alias=REFRESH_COOKIE, description="Cookie mode's refresh token (set by the gateway).")]
CsrfToken = Annotated[str | None, Header(
    alias=CSRF_HEADER, description="Cookie mode: the session's CSRF token (`csrf_token`, "
    "or the `terra_csrf` cookie), required with the refresh cookie.")]
CSRF_REFUSED = {403: {"description": "Cookie mode: the CSRF token is missing or wrong, or "
                                     "the request comes from an origin not allowed."}}


def _tokens(pair: TokenPair, *, cookie_mode: bool, request: Request, response: Response,
            settings: Settings) -> Tokens:
    csrf = None
    if cookie_mode:
        csrf = set_session_cookies(response, request, settings, pair.refresh_token,
                                   pair.refresh_expires_in)
    return Tokens(user=pair.user, access_token=pair.access_token,
                  refresh_token=None if cookie_mode else pair.refresh_token,
                  token_type=pair.token_type, expires_in=pair.expires_in, csrf_token=csrf)


def _refuse_foreign_origin(request: Request, settings: Settings) -> None:
    """Cookie mode from a page of another, unlisted origin: refused (a forged sign-in
    would plant the attacker's session in the victim's browser)."""
    if not origin_allowed(request.headers.get("origin"), request.headers.get("host"),
                          settings.cors_origins):
        raise Problem(403, "csrf-refused", "This origin may not use the session cookie.")


def _from_cookie(request: Request, settings: Settings, cookie: str | None,
                 csrf: str | None) -> str:
    """The refresh token in the cookie, once the request proves it comes from our page;
    refused before anything is spent or ended."""
    if not cookie or len(cookie) > MAX_REFRESH_TOKEN_CHARS:
        raise Problem(401, "invalid-refresh-token", "No refresh token: send "
                      "`refresh_token`, or the `terra_refresh` cookie (cookie mode).",
                      headers={"WWW-Authenticate": "Bearer"})
    _refuse_foreign_origin(request, settings)
    if not csrf_matches(cookie, csrf):
        raise Problem(403, "csrf-refused", f"The {CSRF_HEADER} header is missing or does "
                      "not match this session.")
    return cookie


class DeletionAccepted(BaseModel):
    status: str = "deletion_requested"
    detail: str = "Your account is closed; your photos, models and images are being erased."


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=Tokens,
             responses=THROTTLED)
async def register(body: RegisterBody, auth: Auth, client: Client, request: Request,
                   response: Response, settings: Settings,
                   cookie_mode: CookieMode = False) -> Tokens:
    """Create a password account and sign it in: the account and a token pair."""
    if cookie_mode:
        _refuse_foreign_origin(request, settings)
    message = Register(email=body.email, password=body.password,
                       display_name=body.display_name, client=client)
    pair = await auth.call(AuthRpc.REGISTER, message, TokenReply)
    return _tokens(pair, cookie_mode=cookie_mode, request=request, response=response,
                   settings=settings)


@router.post("/auth/login", response_model=Tokens, responses=THROTTLED)
async def login(body: LoginBody, auth: Auth, client: Client, request: Request,
                response: Response, settings: Settings,
                cookie_mode: CookieMode = False) -> Tokens:
    """Sign in with an email and password, or a Google ID token: a new token pair."""
    if cookie_mode:
        _refuse_foreign_origin(request, settings)
    if body.google_id_token is not None:
        message = LoginWithGoogle(id_token=body.google_id_token, client=client)
        pair = await auth.call(AuthRpc.LOGIN_GOOGLE, message, TokenReply)
    else:
        message = LoginWithPassword(email=body.email, password=body.password, client=client)
        pair = await auth.call(AuthRpc.LOGIN_PASSWORD, message, TokenReply)
    return _tokens(pair, cookie_mode=cookie_mode, request=request, response=response,
                   settings=settings)


@router.post("/auth/refresh", response_model=Tokens, responses=CSRF_REFUSED)
async def refresh(auth: Auth, client: Client, request: Request, response: Response,
                  settings: Settings, body: RefreshBody | None = None,
                  cookie_mode: CookieMode = False, cookie: RefreshCookie = None,
                  csrf: CsrfToken = None) -> Tokens:
    """A new token pair for `{"refresh_token"}`, or in cookie mode for the `terra_refresh`
    cookie (send no body, or `{}`, with `X-CSRF-Token`); a token from the cookie is
    answered in cookie mode."""
    if body is not None and body.refresh_token is not None:
        token = body.refresh_token
        if cookie_mode:
            _refuse_foreign_origin(request, settings)
    else:
        token, cookie_mode = _from_cookie(request, settings, cookie, csrf), True
    pair = await auth.call(AuthRpc.REFRESH, RefreshTokens(refresh_token=token, client=client),
                           TokenReply)
    return _tokens(pair, cookie_mode=cookie_mode, request=request, response=response,
                   settings=settings)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=CSRF_REFUSED)
async def logout(auth: Auth, verifier: Verifier, revocations: SessionRevocations,
                 token: BearerToken, request: Request, settings: Settings,
                 body: LogoutBody | None = None, cookie: RefreshCookie = None,
                 csrf: CsrfToken = None) -> Response:
    """Ends the session of `{"refresh_token"}`, or in cookie mode of the `terra_refresh`
    cookie (with `X-CSRF-Token`; the cookies are cleared)."""
    body = body or LogoutBody()
    from_cookie = body.refresh_token is None
    refresh_token = (_from_cookie(request, settings, cookie, csrf) if from_cookie
                     else body.refresh_token)
    # One session ends with its refresh token alone (an expired access token must not keep
    # it open); all of them take a live access token too, which auth_service checks again.
    if body.everywhere:
        await authenticate(verifier, token)
    message = Logout(refresh_token=refresh_token, everywhere=body.everywhere,
                     access_token=token if body.everywhere else None)
    await auth.call(AuthRpc.LOGOUT, message, DoneReply)
    if body.everywhere:  # refused here before we answer (every other gateway: moments later)
        await revocations.sync()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if from_cookie:
        clear_session_cookies(response, request, settings)
    return response


@router.post("/auth/password", response_model=Tokens, responses={
    **THROTTLED,
    403: {"description": "`wrong-password`: the current password is wrong (`errors` names "
                         "`current_password`); attempts are throttled as sign-ins."},
    409: {"description": "`no-password`: the account signs in with Google only."}})
async def change_password(body: ChangePasswordBody, caller: CurrentUser,
                          token: VerifiedToken, auth: Auth, client: Client,
                          revocations: SessionRevocations, request: Request,
                          response: Response, settings: Settings,
                          cookie_mode: CookieMode = False) -> Tokens:
    """Change the password. Every session of the account ends, on every device (as
    signing out everywhere: its access tokens refused at once, its refresh tokens at
    their next use), and this device gets a new session: the token pair in the answer
    (in cookie mode, the cookie)."""
    if cookie_mode:
        _refuse_foreign_origin(request, settings)
    message = ChangePassword(user_id=caller.user_id, access_token=token,
                             current_password=body.current_password,
                             new_password=body.new_password, client=client)
    pair = await auth.call(AuthRpc.CHANGE_PASSWORD, message, TokenReply,
                           fields={"password": "new_password"})
    await revocations.sync()  # the old tokens are refused here before we answer
    return _tokens(pair, cookie_mode=cookie_mode, request=request, response=response,
                   settings=settings)


@router.get("/me", response_model=User)
async def me(caller: CurrentUser, auth: Auth) -> User:
    """Your account."""
    reply: UserReply = await auth.call(
        AuthRpc.GET_USER, GetUser(user_id=caller.user_id), UserResult
    )
    return reply.user


@router.delete("/me", status_code=status.HTTP_202_ACCEPTED, response_model=DeletionAccepted)
async def delete_me(caller: CurrentUser, token: VerifiedToken, auth: Auth,
                    revocations: SessionRevocations) -> DeletionAccepted:
    """Close your account at once (every session ends) and erase its photos, models,
    images and jobs."""
    await auth.call(
        AuthRpc.DELETE_ACCOUNT, DeleteAccount(user_id=caller.user_id, access_token=token),
        DoneReply)
    # auth_service revoked the user's sessions before answering; every gateway's watch
    # hears of it within moments, this one before answering (its sockets here close).
    await revocations.sync()
    return DeletionAccepted()
