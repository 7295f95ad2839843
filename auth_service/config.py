"""Settings of auth_service (`TERRA_` environment variables)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Annotated

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from terra.settings import RuntimeSettings

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
    issuer: str = "terra-auth"
    audience: str = "terra-api"
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=60, le=30 * 86_400)

    signing_key: SecretStr = Field(
        default_factory=lambda: SecretStr(local_signing_key_pem()),
        description="Ed25519 private key (PKCS#8 PEM) that signs access tokens.",
    )
    previous_public_keys: list[str] = Field(
        default_factory=list,
        description="PEM public keys of retired signing keys, still published while "
        "tokens they signed may be alive (JSON list).",
    )

    google_client_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="OAuth client ids (web, iOS, Android): comma-separated or a JSON list.",
    )
    google_certs_url: str = GOOGLE_CERTS_URL
    google_http_timeout_s: float = 5.0

    # OWASP's argon2id minimum: m=19 MiB, t=2, p=1.
    argon2_memory_kib: int = Field(default=19_456, ge=1024)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)

    login_window_s: int = Field(default=15 * 60, ge=1, le=15 * 60)
    login_max_failures_per_email: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=50, ge=1)

    max_concurrent_requests: int = Field(default=32, ge=1)

    @field_validator("google_client_ids", mode="before")
    @classmethod
    def _split_client_ids(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def placeholder_secrets(self) -> dict[str, str]:
        found = super().placeholder_secrets()
        if self.signing_key.get_secret_value().strip() == local_signing_key_pem().strip():
            found["TERRA_SIGNING_KEY"] = "the published local signing key"
        if self.argon2_memory_kib < 19_456 or self.argon2_time_cost < 2:
            found["TERRA_ARGON2_MEMORY_KIB/TERRA_ARGON2_TIME_COST"] = (
                "below OWASP's argon2id minimum"
            )
        return found
