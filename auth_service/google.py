"""Google sign-in: verify an ID token against Google's published keys.

google-auth checks the signature, `exp` and `aud`; this module adds the issuer and
`email_verified` checks and caches Google's keys for as long as Cache-Control allows.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass

import google.auth.exceptions
import google.auth.transport.requests
import jwt
from google.auth import transport
from google.oauth2 import id_token as google_id_token

from auth_service.domain import AuthError
from contracts.auth import AuthErrorCode

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_MAX_AGE = re.compile(r"max-age=(\d+)")
_SUBJECT = re.compile(r"[A-Za-z0-9_-]{1,255}")  # Google's are decimal; it becomes a KV key


class InvalidGoogleToken(AuthError):
    def __init__(self, detail: str):
        super().__init__(AuthErrorCode.INVALID_GOOGLE_TOKEN, detail)


@dataclass(frozen=True)
class GoogleIdentity:
    sub: str
    email: str
    name: str | None = None


def max_age_s(cache_control: str | None) -> int:
    """Seconds a response may be reused; 0 when Cache-Control forbids or does not say."""
    if not cache_control or "no-store" in cache_control or "no-cache" in cache_control:
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class _CachedResponse(transport.Response):
    _status: int
    _headers: dict
    _data: bytes

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class CachingRequest(transport.Request):
    """A google-auth transport that reuses successful GETs until their max-age runs out."""

    def __init__(self, inner: transport.Request | None = None, timeout_s: float = 5.0) -> None:
        self._inner = inner or google.auth.transport.requests.Request()
        self._timeout_s = timeout_s
        self._cache: dict[str, tuple[float, _CachedResponse]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        if method != "GET" or body is not None:
            return self._inner(url, method, body, headers, timeout or self._timeout_s, **kwargs)
        with self._lock:
            cached = self._cache.get(url)
            if cached and cached[0] > time.monotonic():
                return cached[1]
        response = self._inner(url, "GET", None, headers, timeout or self._timeout_s, **kwargs)
        self.fetches += 1
        kept = _CachedResponse(response.status, dict(response.headers), response.data)
        ttl = max_age_s(kept.headers.get("Cache-Control") or kept.headers.get("cache-control"))
        if response.status == 200 and ttl > 0:
            with self._lock:
                self._cache[url] = (time.monotonic() + ttl, kept)
        return kept


class GoogleVerifier:
    def __init__(
        self,
        client_ids: list[str],
        *,
        certs_url: str,
        request: transport.Request | None = None,
        clock_skew_s: int = 10,
    ) -> None:
        self.client_ids = list(client_ids)
        self.certs_url = certs_url
        self._request = request or CachingRequest()
        self._clock_skew_s = clock_skew_s

    async def verify(self, token: str) -> GoogleIdentity:
        if not self.client_ids:
            raise InvalidGoogleToken("Google sign-in is not configured.")
        claims = await asyncio.to_thread(self._verify_signature, token)
        return identity_from_claims(claims, self.client_ids)

    def _verify_signature(self, token: str) -> dict:
        try:
            return dict(
                google_id_token.verify_token(
                    token,
                    self._request,
                    audience=self.client_ids,
                    certs_url=self.certs_url,
                    clock_skew_in_seconds=self._clock_skew_s,
                )
            )
        except google.auth.exceptions.TransportError as exc:
            raise AuthError(AuthErrorCode.UNAVAILABLE, "Google's keys are unreachable.") from exc
        except (ValueError, google.auth.exceptions.GoogleAuthError, jwt.PyJWTError) as exc:
            raise InvalidGoogleToken(f"Google ID token rejected: {exc}") from exc


def identity_from_claims(claims: dict, client_ids: list[str]) -> GoogleIdentity:
    """The checks beyond the signature; each failure says which claim was wrong."""
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise InvalidGoogleToken("The token was not issued by Google.")
    audiences = claims.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if not set(audiences) & set(client_ids):
        raise InvalidGoogleToken("The token was issued for another application.")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp < time.time() - 10:
        raise InvalidGoogleToken("The token has expired.")
    if not _SUBJECT.fullmatch(str(claims.get("sub") or "")):
        raise InvalidGoogleToken("The token names no valid account.")
    email = claims.get("email")
    verified = claims.get("email_verified")
    if not email or not (verified is True or str(verified).lower() == "true"):
        raise InvalidGoogleToken("Google has not verified this email address.")
    return GoogleIdentity(sub=str(claims["sub"]), email=str(email), name=claims.get("name"))
