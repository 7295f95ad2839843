from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from contracts.jobs import JobKind
from contracts.topology import RATE_LIMITS_KV, WS_TICKETS_KV
from terra.settings import RuntimeSettings, listed


class GatewaySettings(RuntimeSettings):
    host: str = Field(default="127.0.0.1", description="Listen address (0.0.0.0 in "
                      "containers; the local profile listens on loopback only).")
    port: int = Field(default=8000, description="Listen port.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed browser "
                                    "origins (JSON list); none: no CORS headers.")
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest JSON request body.")
    max_upload_bytes: int = Field(
        default=21 * 20 * 1024 * 1024 + 1024 * 1024,
        description="Largest training upload (a file over 20 MB is refused by name, not by "
        "cutting the request short).",
    )
    auth_timeout_s: float = Field(default=5.0, description="Wait for auth_service replies.")
    notifier_timeout_s: float = Field(
        default=5.0, gt=0, description="Wait for notifier_service replies (webhook "
        "registration resolves the URL's host, so it can take a DNS round trip).")
    nats_request_timeout_s: float = Field(
        default=2.0, gt=0, description="Longest one JetStream call of a request waits (a "
        "publish ack, a KV read or write, stream or consumer info); then the request answers "
        "503 with Retry-After. nats-py's own default is 5 s."
    )
    ready_workers: list[str] = Field(
        default_factory=lambda: [kind.value for kind in JobKind],
        description="JSON list of job domains `/ready` requires a live worker for; `[]` makes "
        "`/ready` about the gateway's own dependencies (NATS, streams, object storage) only.",
    )
    wait_timeout_s: float = Field(
        default=5.0, description="Longest a `?wait=true` request waits before answering 202."
    )
    max_generations_per_user: int = Field(
        default=4, ge=1, description="Queued and running generation jobs per user (then 429)."
    )
    ws_queue_size: int = Field(default=256, description="Events buffered per socket "
                               "before it is closed with 4408.")
    ws_send_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest one WebSocket send may wait for the client to "
        "read; then the socket is closed (4408) and its buffer freed.")
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="Largest request head (request line and "
        "headers); larger ones are answered 431.")
    max_headers: int = Field(default=100, ge=10, description="Most headers in a request (431).")
    prompt_rate_limit: int = Field(
        default=60, ge=1, description="Prompt optimisations one user may request per "
        "`prompt_rate_window_s` (then 429 with Retry-After), across every gateway.")
    prompt_rate_window_s: float = Field(
        default=60.0, gt=0, le=RATE_LIMITS_KV.ttl_s,
        description="The sliding window of `prompt_rate_limit` (at most the rate-limit "
        "bucket's TTL, which forgets the counts).")
    ws_ticket_ttl_s: float = Field(
        default=30.0, gt=0, le=WS_TICKETS_KV.ttl_s,
        description="How long a WebSocket ticket (`POST /api/ws/ticket`) may wait for its one "
        "use (at most the ticket bucket's TTL, which forgets unused ones).")
    ws_ping_interval_s: float = Field(default=20.0, description="WebSocket keep-alive pings.")
    keys_refresh_min_interval_s: float = Field(
        default=10.0, description="Least time between signing key fetches on an unknown kid."
    )
    trust_forwarded_for: bool = Field(
        default=False,
        description="Behind one trusted proxy: the client address is the last X-Forwarded-For "
        "hop (the one that proxy appended); never enable when clients reach the gateway directly.",
    )

# The console's bundle, built by `make` (web/ -> web/dist).
CONSOLE_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"


class ConsoleSettings(RuntimeSettings):
    """What the console serves; the same variables auth_service and the S3 client read."""

    google_client_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Google OAuth client ids; the first is the web "
        "one the console's sign-in button uses (none: no button).")
    console_dist: Path = Field(default=CONSOLE_DIST, description="The built console (web/dist).")

    @field_validator("google_client_ids", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return listed(value)

    @property
    def google_client_id(self) -> str | None:
        return self.google_client_ids[0] if self.google_client_ids else None

    @property
    def s3_public_origin(self) -> str:
        """The origin presigned URLs point at (`ObjectStorage.from_settings`)."""
        if self.s3_public_endpoint:
            scheme = "https" if self.s3_public_secure else "http"
            return f"{scheme}://{self.s3_public_endpoint}"
        return f"{'https' if self.s3_secure else 'http'}://{self.s3_endpoint}"
