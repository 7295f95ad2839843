"""Access tokens, verified locally with the public keys auth_service publishes.

No call per request: the JWKS is fetched once and again only when a token names a key
id we have not seen (rotation), at most once per `keys_refresh_min_interval_s`. A token
is also refused when its user's sessions were revoked after it was issued (the account
was deleted, or its owner signed out everywhere): the revocation list is in memory
(`terra.records.revocations.RevocationWatch`), checked on every request, cached tokens included.
Its `sub` must be a valid user id, since it becomes a subject token and a key.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import jwt
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from contracts.auth import GetSigningKeys, SigningKeys
from contracts.ids import InvalidId, checked_id
from contracts.topology import AuthRpc
from gateway.auth_client import AuthClient
from terra.errors import TerraError
from terra.records.revocations import is_revoked

VERIFIED_CACHE_SIZE = 50_000  # tokens; about 10 MB at most


class InvalidToken(TerraError):
    """The token is missing, malformed, forged, expired or signed by an unknown key."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    email: str | None
    token_id: str | None
    issued_at: float = 0.0  # the token's `iat`: a revocation ends tokens issued up to it
    expires_at: float = math.inf  # the token's `exp`: what it opened (a socket) ends then


class RevocationList(Protocol):
    """When each user's sessions were last revoked (`terra.records.revocations.RevocationWatch`)."""

    async def revoked_at(self, user_id: str) -> datetime | None: ...

    def known(self, user_id: str) -> datetime | None: ...


class TokenVerifier:
    def __init__(self, auth: AuthClient, min_refresh_interval_s: float = 10.0,
                 revocations: RevocationList | None = None) -> None:
        self._auth = auth
        self._revocations = revocations
        self._min_refresh_interval_s = min_refresh_interval_s
        self._keys: dict[str, object] = {}
        self._issuer: str | None = None
        self._audience: str | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        # Clients send the same token for its whole life: verify its signature once.
        self._verified: OrderedDict[str, Caller] = OrderedDict()

    async def refresh_keys(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched_at < self._min_refresh_interval_s:
                return
            reply: SigningKeys = await self._auth.call(
                AuthRpc.SIGNING_KEYS, GetSigningKeys(), SigningKeys
            )
            self._keys = {jwk["kid"]: _public_key(jwk) for jwk in reply.keys}
            self._issuer, self._audience = reply.issuer, reply.audience
            self._fetched_at = time.monotonic()

    async def verify(self, token: str | None) -> Caller:
        if not token:
            raise InvalidToken("an access token is required")
        if (caller := self._verified.get(token)) is not None:
            if time.time() >= caller.expires_at:
                del self._verified[token]
                raise InvalidToken("the access token has expired")
            self._verified.move_to_end(token)
        else:
            caller = await self._verify_signature(token)
            self._verified[token] = caller
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        try:
            await self.check_session(caller)
        except InvalidToken:
            self._verified.pop(token, None)
            raise
        return caller

    async def check_session(self, caller: Caller) -> None:
        """`InvalidToken` when the caller's sessions were revoked after its token was
        issued (for a caller known without its token: a WebSocket ticket's)."""
        if self._revocations is not None and is_revoked(
                caller.issued_at, await self._revocations.revoked_at(caller.user_id)):
            raise InvalidToken("the access token has been revoked")

    def still_valid(self, caller: Caller) -> bool:
        """The caller's token is not revoked as far as this process knows right now (no
        I/O: for a check that must not wait, e.g. right after a socket subscribed)."""
        return self._revocations is None or not is_revoked(
            caller.issued_at, self._revocations.known(caller.user_id))

    async def _verify_signature(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("the access token is malformed") from exc
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("the access token names no signing key")
        if kid not in self._keys:
            await self.refresh_keys()
            if kid not in self._keys:
                raise InvalidToken("the access token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                self._keys[kid],
                algorithms=["EdDSA"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("the access token is not valid") from exc
        try:
            user_id = checked_id(claims["sub"], "user id")
        except InvalidId as exc:
            raise InvalidToken("the access token names no valid user") from exc
        return Caller(user_id=user_id, email=claims.get("email"), token_id=claims.get("jti"),
                      issued_at=float(claims["iat"]), expires_at=float(claims["exp"]))


def _public_key(jwk: dict[str, str]) -> object:
    if jwk.get("kty") == "OKP":
        return OKPAlgorithm.from_jwk(json.dumps(jwk))
    if jwk.get("kty") == "RSA":
        return RSAAlgorithm.from_jwk(json.dumps(jwk))
    raise ValueError(f"unsupported key type {jwk.get('kty')!r}")
