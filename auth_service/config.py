"""Settings of auth_service (`TERRA_` environment variables)."""

from __future__ import annotations

import hashlib
import hmac
from functools import cache
from typing import Annotated, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from contracts.topology import LOGIN_THROTTLE_KV, REVOCATIONS_KV, SIGNUP_THROTTLE_KV
from terra.errors import ConfigurationError
from terra.settings import RuntimeSettings, listed

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
_LOCAL_KEY_SEED = b"terra-local-signing-key-v1 (published; refused outside the local profile)"


@cache
def local_signing_key_pem() -> str:
    """A published Ed25519 key derived from a fixed seed, so local processes agree on it."""
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(_LOCAL_KEY_SEED).digest())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class AuthSettings(RuntimeSettings):
    uses_storage: ClassVar[bool] = False

    issuer: str = Field(default="terra-auth", description="Access tokens' iss.")
    audience: str = Field(default="terra-api", description="Access tokens' aud.")
    access_token_ttl_s: int = Field(
        default=900, ge=30,
        description="Lifetime of access tokens; at most the time the revocation list keeps "
        "an entry (terra_revocations: a day), or a token could outlive its revocation.")
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=60, le=30 * 86_400,
                                     description="Lifetime of refresh tokens.")

    signing_key: SecretStr = Field(
        default_factory=lambda: SecretStr(local_signing_key_pem()),
        description="Ed25519 private key (PKCS#8 PEM) that signs access tokens; every "
        "replica needs the same. The published local key is refused in production "
        "(make one: openssl genpkey -algorithm ed25519).",
    )
    previous_public_keys: list[str] = Field(
        default_factory=list,
        description="PEM public keys of retired signing keys, still published while "
        "tokens they signed may be alive (JSON list).",
    )

    google_client_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="OAuth client ids (web, iOS, Android) accepted as a Google ID token's "
        "aud: comma-separated or a JSON list; empty: Google sign-in is refused.",
    )
    google_certs_url: str = Field(default=GOOGLE_CERTS_URL,
                                  description="Google's signing certificates.")
    google_http_timeout_s: float = Field(default=5.0, description="Timeout fetching them.")

    # OWASP's argon2id minimum: m=19 MiB, t=2, p=1.
    argon2_memory_kib: int = Field(default=19_456, ge=1024, description="argon2id memory "
                                   "(KiB); production refuses less than 19456.")
    argon2_time_cost: int = Field(default=2, ge=1, description="argon2id iterations; "
                                  "production refuses less than 2.")
    argon2_parallelism: int = Field(default=1, ge=1, description="argon2id lanes.")

    # Throttles (auth_service.throttle). A client network is an IPv4 address or an IPv6 /64.
    # The windows cannot outlast their buckets' TTL, which is what forgets the counts.
    login_window_s: int = Field(
        default=15 * 60, ge=1, le=int(LOGIN_THROTTLE_KV.ttl_s or 0),
        description="Window in which sign-in failures count.")
    login_max_failures_per_email: int = Field(
        default=5, ge=1,
        description="Failures for one email from one client network before that pair is "
        "refused (429). From other networks the email is only slowed down, never locked.")
    login_max_failures_per_address: int = Field(
        default=30, ge=1,
        description="Failures from one client network across all emails before it is "
        "refused (429): password spraying.")
    login_slowdown_after_failures: int = Field(
        default=10, ge=1,
        description="Recent failures for one email (from anywhere) after which every "
        "attempt for it waits before its password is checked.")
    login_slowdown_first_delay_s: float = Field(default=0.25, gt=0, le=4.0,
                                                description="That wait at first.")
    login_slowdown_max_delay_s: float = Field(
        default=3.0, gt=0, le=4.0,
        description="Cap of that wait (it doubles with each further failure); kept under the "
        "gateway's wait for auth replies (TERRA_AUTH_TIMEOUT_S, 5 s).")
    registration_window_s: int = Field(
        default=3600, ge=1, le=int(SIGNUP_THROTTLE_KV.ttl_s or 0),
        description="Window in which sign-ups (password or Google) count per client network.")
    registration_max_per_address: int = Field(
        default=10, ge=1,
        description="Sign-up attempts from one client network in the window before 429.")

    max_concurrent_requests: int = Field(default=32, ge=1,
                                         description="Requests one replica handles at once.")

    @field_validator("google_client_ids", mode="before")
    @classmethod
    def _split_client_ids(cls, value: object) -> object:
        return listed(value)

    @field_validator("access_token_ttl_s")
    @classmethod
    def _tokens_die_before_their_revocation(cls, value: int) -> int:
        keep_s = REVOCATIONS_KV.ttl_s
        if keep_s is not None and value > keep_s:
            raise ValueError(
                f"TERRA_ACCESS_TOKEN_TTL_S={value} outlives a revocation: the revocation list "
                f"({REVOCATIONS_KV.bucket}) keeps an entry {keep_s:.0f} s, so a token of a "
                f"deleted or signed-out account would work again after that; use at most "
                f"{keep_s:.0f}")
        return value

    @model_validator(mode="after")
    def _published_key_only_on_a_chosen_laptop(self) -> AuthSettings:
        """The local key is published: whoever has this code can mint tokens with it. A
        deployment that forgot TERRA_PROFILE would default to the local profile and sign
        with it, so only an explicit TERRA_PROFILE=local accepts it (outside the local
        profile, `placeholder_secrets` refuses it)."""
        if "profile" not in self.model_fields_set and self.uses_published_signing_key:
            raise ConfigurationError(
                "auth_service would sign access tokens with the published local signing "
                "key, which anyone can use to mint tokens, and TERRA_PROFILE is not set. On "
                "a laptop, set TERRA_PROFILE=local; anywhere else, set TERRA_SIGNING_KEY to "
                "an Ed25519 private key of your own (PKCS#8 PEM).")
        return self

    @model_validator(mode="after")
    def _slowdown_cap_above_first_delay(self) -> AuthSettings:
        if self.login_slowdown_max_delay_s < self.login_slowdown_first_delay_s:
            raise ValueError("login_slowdown_max_delay_s is below login_slowdown_first_delay_s")
        return self

    @property
    def uses_published_signing_key(self) -> bool:
        return self.signing_key.get_secret_value().strip() == local_signing_key_pem().strip()

    def throttle_key_secret(self) -> bytes:
        """Keys the hashes that name throttle counters, so the buckets reveal no email or
        address (a plain hash of an IPv4 address is undone by trying all 2^32). Derived from
        the signing key, which every replica holds; rotating it only restarts the counts."""
        return hmac.digest(
            self.signing_key.get_secret_value().strip().encode(), b"terra throttle keys v1",
            "sha256")

    def placeholder_secrets(self) -> dict[str, str]:
        found = super().placeholder_secrets()
        if self.uses_published_signing_key:
            found["TERRA_SIGNING_KEY"] = "the published local signing key"
        if self.argon2_memory_kib < 19_456 or self.argon2_time_cost < 2:
            found["TERRA_ARGON2_MEMORY_KIB/TERRA_ARGON2_TIME_COST"] = (
                "below OWASP's argon2id minimum"
            )
        return found
