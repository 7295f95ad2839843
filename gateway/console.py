"""The web console at `/`: the files `make` builds from web/ into web/dist (its Web Push
service worker at `/sw.js`), served with a strict Content-Security-Policy and the usual
security headers, and `GET /api/config`, what
the console needs to know before anyone signs in (Google sign-in, the S3 origin of
presigned images).

`python -m gateway.console openapi PATH` writes the OpenAPI document without a server: the
console's TypeScript types are generated from it, so a route change that breaks the
console fails the build."""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from gateway.config import ConsoleSettings
from gateway.problems import problem_response

GOOGLE_SCRIPT = "https://accounts.google.com/gsi/client"
GOOGLE_ORIGIN = "https://accounts.google.com"
# A Host header goes into the CSP: anything but a host name and port is not echoed.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_ASSET = re.compile(r"^[A-Za-z0-9_.\-]+\.(js|css|svg|png|ico|map)$")

router = APIRouter()


@lru_cache(maxsize=1)
def _settings() -> ConsoleSettings:
    return ConsoleSettings()


async def console_settings() -> ConsoleSettings:
    return _settings()


Settings = Annotated[ConsoleSettings, Depends(console_settings)]


def content_security_policy(settings: ConsoleSettings, request: Request) -> str:
    """Only the gateway, its socket, the S3 origin (images) and, when configured, Google."""
    host = request.headers.get("host", "")
    secure = request.url.scheme == "https"
    socket = f"{'wss' if secure else 'ws'}://{host}" if _HOST.match(host) else ""
    s3 = settings.s3_public_origin
    google = settings.google_client_id is not None
    directives = {
        "default-src": "'self'",
        "script-src": "'self'" + (f" {GOOGLE_SCRIPT}" if google else ""),
        "style-src": "'self'" + (f" {GOOGLE_ORIGIN}/gsi/style" if google else ""),
        "img-src": f"'self' data: blob: {s3}",
        "connect-src": " ".join(filter(None, ["'self'", socket, s3,
                                              f"{GOOGLE_ORIGIN}/gsi/" if google else ""])),
        "frame-src": f"{GOOGLE_ORIGIN}/gsi/" if google else "'none'",
        "font-src": "'self'",
        # The Web Push service worker, /sw.js, and nothing else runs as a worker.
        "worker-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def security_headers(settings: ConsoleSettings, request: Request) -> dict[str, str]:
    hsts = ({"Strict-Transport-Security": "max-age=31536000"}
            if request.url.scheme == "https" else {})
    return {
        **hsts,
        "Content-Security-Policy": content_security_policy(settings, request),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin-allow-popups",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    }


def _not_built(request: Request, settings: ConsoleSettings) -> Response:
    return problem_response(
        503, "console-not-built", "The web console's files are missing (web/dist): run "
        "`make` (or `make install`) to build them. The API works without them.",
        title="The console is not built", instance=request.url.path,
        headers=security_headers(settings, request))


@router.get("/", include_in_schema=False)
async def index(request: Request, settings: Settings) -> Response:
    page = settings.console_dist / "index.html"
    if not page.is_file():
        return _not_built(request, settings)
    return FileResponse(page, media_type="text/html; charset=utf-8", headers={
        **security_headers(settings, request), "Cache-Control": "no-cache"})


@router.get("/console/{name}", include_in_schema=False)
async def asset(name: str, request: Request, settings: Settings) -> Response:
    """A built file by its plain name (no folders: nothing outside web/dist is reachable)."""
    path = settings.console_dist / name
    if not _ASSET.match(name) or not path.is_file():
        return problem_response(404, "not-found", f"No console file {name!r}.",
                                instance=request.url.path,
                                headers=security_headers(settings, request))
    # Bundles carry their content hash in their name: they never change under it.
    cache = "public, max-age=31536000, immutable" if re.search(r"-[A-Z0-9]{8}\.", name) \
        else "no-cache"
    return FileResponse(path, headers={**security_headers(settings, request),
                                       "Cache-Control": cache})


@router.get("/sw.js", include_in_schema=False)
async def service_worker(request: Request, settings: Settings) -> Response:
    """The service worker that shows Web Push notifications: at the root, so its scope is
    the whole console; never cached, so a new build reaches browsers at their next visit."""
    path = settings.console_dist / "sw.js"
    if not path.is_file():
        return _not_built(request, settings)
    return FileResponse(path, media_type="text/javascript; charset=utf-8", headers={
        **security_headers(settings, request), "Cache-Control": "no-cache",
        "Service-Worker-Allowed": "/"})


class ClientConfig(BaseModel):
    google_client_id: str | None = Field(
        description="The OAuth client id for Google's sign-in button; null: Google sign-in "
        "is not configured.", examples=["1234-abc.apps.googleusercontent.com"])
    s3_origin: str = Field(description="The origin presigned image URLs point at.",
                           examples=["http://127.0.0.1:8333"])


@router.get("/api/config", response_model=ClientConfig, tags=["console"],
            summary="What a client needs before signing in")
async def config(response: Response, settings: Settings) -> ClientConfig:
    """Public, no token: whether Google sign-in is configured, and where images load from."""
    response.headers["Cache-Control"] = "no-cache"
    return ClientConfig(google_client_id=settings.google_client_id,
                        s3_origin=settings.s3_public_origin)


def write_openapi(path: Path) -> None:
    from gateway.app import create_app

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(create_app().openapi(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "openapi":
        sys.exit("usage: python -m gateway.console openapi PATH")
    write_openapi(Path(sys.argv[2]))
