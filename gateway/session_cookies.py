"""The refresh token in a cookie, for browsers: out of reach of the page's JavaScript.

Opt-in per request (`X-Terra-Refresh-Cookie: 1` on sign-up, sign-in, refresh, password
change): the refresh token then goes in `terra_refresh`, an httpOnly, SameSite=Strict
cookie scoped to `/api/auth` (Secure, except in the local profile over plain http on a
loopback address, where a browser could not send it back), never in the body.

A cookie rides along with requests other sites make, so a refresh or a sign-out that
takes the token from the cookie must prove the page asking is ours (CSRF):

- `X-CSRF-Token` must carry the session's CSRF token: a digest of the refresh token
  (domain-separated SHA-256), which the page reads from the `terra_csrf` cookie (not
  httpOnly, `Path=/`) or from the body that set it. A double submit bound to the session:
  a site that can plant cookies (a sibling subdomain) still cannot forge it, since it
  cannot read the httpOnly refresh token it is derived from. A custom header also forces
  a CORS preflight, which only `TERRA_CORS_ORIGINS` pass;
- an `Origin` header, when the browser sends one, must be the gateway's own origin or one
  of `TERRA_CORS_ORIGINS` (belt and braces: the browser's word on who is asking).

Pure rules; the routes (`gateway.routers.accounts`) apply them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from fastapi import Request, Response

from gateway.config import GatewaySettings
from terra.settings import Profile

REFRESH_COOKIE = "terra_refresh"
CSRF_COOKIE = "terra_csrf"
COOKIE_MODE_HEADER = "X-Terra-Refresh-Cookie"
CSRF_HEADER = "X-CSRF-Token"
REFRESH_COOKIE_PATH = "/api/auth"  # sent to the auth routes only, not to every request


def csrf_token_for(refresh_token: str) -> str:
    digest = hashlib.sha256(b"terra-csrf\0" + refresh_token.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(refresh_token: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token_for(refresh_token).encode(),
                                                   presented.encode())


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """A browser request's `Origin` is ours (same host) or an allowed one; a request
    without one (not a cross-site browser request) passes this check."""
    if origin is None:
        return True
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    return bool(parts.scheme in ("http", "https") and host and parts.netloc == host)


def _loopback(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address((hostname or "").strip("[]")).is_loopback
    except ValueError:
        return False


def secure_cookies(request: Request, settings: GatewaySettings) -> bool:
    return not (settings.profile is Profile.LOCAL and request.url.scheme == "http"
                and _loopback(request.url.hostname))


def set_session_cookies(response: Response, request: Request, settings: GatewaySettings,
                        refresh_token: str, max_age_s: int | None) -> str:
    """Put the refresh token and its CSRF token in cookies; returns the CSRF token."""
    secure = secure_cookies(request, settings)
    csrf = csrf_token_for(refresh_token)
    response.set_cookie(REFRESH_COOKIE, refresh_token, max_age=max_age_s,
                        path=REFRESH_COOKIE_PATH, secure=secure, httponly=True,
                        samesite="strict")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age_s, path="/", secure=secure,
                        httponly=False, samesite="strict")
    return csrf


def clear_session_cookies(response: Response, request: Request,
                          settings: GatewaySettings) -> None:
    secure = secure_cookies(request, settings)
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=secure,
                           httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, httponly=False,
                           samesite="strict")
