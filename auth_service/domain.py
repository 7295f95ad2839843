"""Pure rules of accounts: emails, password policy, the user record (login windows are
`terra.records.rate_limits`'s).

Nothing here does I/O; adapters and handlers wrap it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from importlib import resources

from contracts.auth import AuthErrorCode, Provider, User
from terra.errors import TerraError

MIN_PASSWORD_LENGTH = 10


class AuthError(TerraError):
    """Root of auth_service's errors: each carries the code the caller receives."""

    def __init__(self, code: AuthErrorCode, detail: str, retry_after_s: int | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s


class WeakPassword(AuthError):
    def __init__(self, detail: str):
        super().__init__(AuthErrorCode.WEAK_PASSWORD, detail)


class InvalidCredentials(AuthError):
    def __init__(self) -> None:
        # One message for unknown email and wrong password, so replies reveal no accounts.
        super().__init__(AuthErrorCode.INVALID_CREDENTIALS, "Email or password is incorrect.")


class WrongPassword(AuthError):
    def __init__(self) -> None:
        super().__init__(AuthErrorCode.WRONG_PASSWORD, "The current password is incorrect.")


class NoPassword(AuthError):
    def __init__(self) -> None:
        super().__init__(AuthErrorCode.NO_PASSWORD, "This account signs in with Google and "
                         "has no password to change.")


class RetiredRequest(AuthError):
    """A request version auth_service no longer serves; the detail names its successor."""

    def __init__(self, retired: str, instead: str):
        super().__init__(AuthErrorCode.INVALID_REQUEST, f"{retired} is retired: {instead}.")


class RateLimited(AuthError):
    def __init__(self, retry_after_s: int):
        super().__init__(
            AuthErrorCode.RATE_LIMITED,
            "Too many failed sign-in attempts; try again later.",
            retry_after_s=retry_after_s,
        )


def normalise_email(email: str) -> str:
    """Emails compare case-insensitively and without surrounding spaces."""
    return email.strip().lower()


def email_digest(email: str) -> str:
    """A stable, key-safe name for an email (KV keys cannot hold `@`)."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("auth_service").joinpath("data/common_passwords.txt").read_text()
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_password_policy(password: str, *, email: str | None = None) -> None:
    """Raise `WeakPassword` with a reason the user can act on."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"Use at least {MIN_PASSWORD_LENGTH} characters.")
    lowered = password.lower()
    if lowered in common_passwords():
        raise WeakPassword("This password is too common; choose another.")
    if email and lowered == normalise_email(email):
        raise WeakPassword("The password cannot be your email address.")
    if len(set(password)) < 3:
        raise WeakPassword("Use more than a couple of distinct characters.")


@dataclass
class UserRecord:
    """What USERS_KV holds for an account."""

    id: str
    email: str
    created_at: datetime
    providers: list[Provider] = field(default_factory=list)
    display_name: str | None = None
    password_hash: str | None = None
    google_sub: str | None = None
    # "Sign out everywhere": refresh tokens issued at or before this time are refused. On
    # the account, not only in the revocation list (which forgets after a day), because a
    # refresh token lives for weeks.
    signed_out_at: datetime | None = None

    def public(self) -> User:
        return User(
            id=self.id,
            email=self.email,
            display_name=self.display_name,
            providers=list(self.providers),
            created_at=self.created_at,
        )

    def linked_to_google(self, sub: str) -> UserRecord:
        """A copy of the record that signs in with this Google account too."""
        providers = list(self.providers)
        if Provider.GOOGLE not in providers:
            providers.append(Provider.GOOGLE)
        return replace(self, google_sub=sub, providers=providers)
