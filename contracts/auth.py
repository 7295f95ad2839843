"""Accounts: request/reply between the gateway and auth_service, and account events.

Auth is request/reply over core NATS (the caller waits for the answer); every reply is
either the success model or an `AuthFailure` with a machine-readable code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, EmailStr, Field

from contracts.base import Event, Message, Model
from contracts.ids import Id


class Provider(StrEnum):
    PASSWORD = "password"
    GOOGLE = "google"


class User(Model):
    """The public view of an account (`GET /api/me`)."""

    id: Id
    email: str
    display_name: str | None = None
    providers: list[Provider]
    created_at: AwareDatetime


# --- requests (gateway -> auth_service) -------------------------------------------------


class ClientContext(Model):
    """Where a request came from, for rate limits and audit."""

    address: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)


class Register(Message):
    type: Literal["auth.register.v1"] = "auth.register.v1"
    email: EmailStr
    password: str = Field(max_length=1024)
    display_name: str | None = Field(default=None, max_length=100)
    client: ClientContext = ClientContext()


class LoginWithPassword(Message):
    type: Literal["auth.login_password.v1"] = "auth.login_password.v1"
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    client: ClientContext = ClientContext()


class LoginWithGoogle(Message):
    type: Literal["auth.login_google.v1"] = "auth.login_google.v1"
    id_token: str = Field(max_length=8192)
    client: ClientContext = ClientContext()


class RefreshTokens(Message):
    type: Literal["auth.refresh.v1"] = "auth.refresh.v1"
    refresh_token: str = Field(max_length=512)
    client: ClientContext = ClientContext()


# The caller's access token, on requests that act on an account in its owner's name:
# auth_service verifies it itself (signature, issuer, audience, expiry, subject, not
# revoked), so only its holder can, whoever else can reach the subject.
_ACCESS_TOKEN_USE = ("The caller's access token (the bearer token the gateway received); "
                     "auth_service checks it is a live token of the account acted on.")


class Logout(Message):
    """End the refresh token's session, or with `everywhere` every session of its user.

    `everywhere` also takes the caller's access token, of the same user."""

    type: Literal["auth.logout.v2"] = "auth.logout.v2"
    refresh_token: str = Field(max_length=512, repr=False)
    everywhere: bool = Field(
        default=False,
        description="End every session of the user, not only this one: access tokens "
        "issued until now are refused by every gateway at once, refresh tokens at their "
        "next use. Requires `access_token`, of the refresh token's user.",
    )
    access_token: str | None = Field(default=None, max_length=4096, repr=False,
                                     description=_ACCESS_TOKEN_USE)


class LogoutV1(Message):
    """Retired by `auth.logout.v2`: auth_service still ends one session with it, and refuses
    `everywhere` (which now takes the caller's access token)."""

    type: Literal["auth.logout.v1"] = "auth.logout.v1"
    refresh_token: str = Field(max_length=512, repr=False)
    everywhere: bool = Field(
        default=False,
        description="End every session of the user, not only this one: access tokens "
        "issued until now are refused by every gateway at once, refresh tokens at their "
        "next use.",
    )


class GetUser(Message):
    type: Literal["auth.get_user.v1"] = "auth.get_user.v1"
    user_id: Id


class DeleteAccount(Message):
    """Delete the account and erase everything of it, asked by its owner."""

    type: Literal["auth.delete_account.v2"] = "auth.delete_account.v2"
    user_id: Id
    access_token: str = Field(max_length=4096, repr=False, description=_ACCESS_TOKEN_USE)


class ChangePassword(Message):
    """Change the account's password, asked by its owner: the current password proves it
    (throttled like a sign-in), the new one follows the registration rules. Every session
    of the account ends (as "sign out everywhere") and a new one starts for the caller."""

    type: Literal["auth.change_password.v1"] = "auth.change_password.v1"
    user_id: Id
    access_token: str = Field(max_length=4096, repr=False, description=_ACCESS_TOKEN_USE)
    current_password: str = Field(max_length=1024, repr=False)
    new_password: str = Field(max_length=1024, repr=False)
    client: ClientContext = ClientContext()


class DeleteAccountV1(Message):
    """Retired by `auth.delete_account.v2`: refused (it names an account without proving
    its owner asked)."""

    type: Literal["auth.delete_account.v1"] = "auth.delete_account.v1"
    user_id: Id


# What auth_service decodes on those subjects: the current version, and the retired one it
# answers with a refusal or, where still safe, serves.
LogoutRequest = Annotated[Logout | LogoutV1, Field(discriminator="type")]
DeleteAccountRequest = Annotated[DeleteAccount | DeleteAccountV1, Field(discriminator="type")]


class GetSigningKeys(Message):
    """Ask for the public keys that verify access tokens (a JWKS)."""

    type: Literal["auth.get_signing_keys.v1"] = "auth.get_signing_keys.v1"


# --- replies (auth_service -> gateway) --------------------------------------------------


class AuthErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    WEAK_PASSWORD = "weak_password"
    EMAIL_TAKEN = "email_taken"
    INVALID_CREDENTIALS = "invalid_credentials"
    # A password change whose current password is wrong (the caller is signed in: not 401).
    WRONG_PASSWORD = "wrong_password"
    # A password change on an account that has none (it signs in with Google only).
    NO_PASSWORD = "no_password"
    # A request acting on an account carried no live access token of it (auth's own check).
    INVALID_ACCESS_TOKEN = "invalid_access_token"
    INVALID_GOOGLE_TOKEN = "invalid_google_token"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"


class AuthFailure(Message):
    type: Literal["auth.failure.v1"] = "auth.failure.v1"
    code: AuthErrorCode
    detail: str
    retry_after_s: int | None = Field(
        default=None,
        description="With `rate_limited`: seconds until another attempt can be admitted "
        "(the gateway's `Retry-After`).",
    )


class TokenPair(Message):
    type: Literal["auth.token_pair.v1"] = "auth.token_pair.v1"
    user: User
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int | None = Field(
        default=None, description="Seconds until the refresh token expires unused (a "
        "cookie holding it lasts as long).")
    created: bool = Field(default=False, description="True when this call created the account.")


class UserReply(Message):
    type: Literal["auth.user.v1"] = "auth.user.v1"
    user: User


class Done(Message):
    type: Literal["auth.done.v1"] = "auth.done.v1"


class SigningKeys(Message):
    type: Literal["auth.signing_keys.v1"] = "auth.signing_keys.v1"
    issuer: str
    audience: str
    keys: list[dict[str, str]] = Field(description="JWKS `keys`: public JWKs with `kid`.")


TokenReply = Annotated[TokenPair | AuthFailure, Field(discriminator="type")]
UserResult = Annotated[UserReply | AuthFailure, Field(discriminator="type")]
DoneReply = Annotated[Done | AuthFailure, Field(discriminator="type")]


# --- events ------------------------------------------------------------------------------


class UserRegistered(Event):
    domain: ClassVar[str] = "account"
    name: ClassVar[str] = "registered"
    type: Literal["account.registered.v1"] = "account.registered.v1"
    provider: Provider


class AccountDeleted(Event):
    """The user is gone: every service erases what it holds for them."""

    domain: ClassVar[str] = "account"
    name: ClassVar[str] = "deleted"
    type: Literal["account.deleted.v1"] = "account.deleted.v1"
