"""Access tokens: short-lived EdDSA JWTs the gateway verifies locally with the JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth_service.domain import AuthError
from contracts.auth import AuthErrorCode

ALGORITHM = "EdDSA"


class InvalidAccessToken(AuthError):
    def __init__(self, detail: str):
        super().__init__(AuthErrorCode.INVALID_ACCESS_TOKEN, detail)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The key as an RFC 8037 OKP JWK with its RFC 7638 thumbprint as `kid`."""
    x = _b64url(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # RFC 7638: the required members only, lexicographic order, no whitespace.
    required = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(required.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def load_private_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("the signing key must be an Ed25519 private key (PKCS#8 PEM)")
    return key


def load_public_key(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError("previous signing keys must be Ed25519 public keys (PEM)")
    return key


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    jti: str


class TokenIssuer:
    """Signs with the current key; verifies with the current and the retired keys."""

    def __init__(
        self,
        signing_key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        ttl_s: int,
        previous_keys: tuple[Ed25519PublicKey, ...] = (),
    ) -> None:
        self._signing_key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        current = public_jwk(signing_key.public_key())
        self.kid = current["kid"]
        self._jwks = [current] + [public_jwk(key) for key in previous_keys]
        self._verify_keys: dict[str, Ed25519PublicKey] = {self.kid: signing_key.public_key()}
        for key, jwk in zip(previous_keys, self._jwks[1:], strict=True):
            self._verify_keys.setdefault(jwk["kid"], key)

    def jwks(self) -> list[dict[str, str]]:
        return [dict(jwk) for jwk in self._jwks]

    def issue(self, *, user_id: str, email: str, now: float | None = None) -> IssuedToken:
        issued_at = int(now if now is not None else time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": issued_at,
            "exp": issued_at + self.ttl_s,
            "jti": jti,
            "email": email,
        }
        token = jwt.encode(
            claims, self._signing_key, algorithm=ALGORITHM, headers={"kid": self.kid}
        )
        return IssuedToken(token=token, expires_in=self.ttl_s, jti=jti)

    def verify(self, token: str, *, leeway_s: float = 0) -> dict[str, Any]:
        """The claims of a valid token; `InvalidAccessToken` otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidAccessToken("The access token is malformed.") from exc
        key = self._verify_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidAccessToken("The access token names an unknown signing key.")
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=leeway_s,
                options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidAccessToken("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidAccessToken(f"The access token is not valid: {exc}.") from exc
