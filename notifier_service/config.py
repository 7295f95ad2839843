"""notifier_service's settings (`TERRA_` prefix, as every service's)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from contracts.topology import NOTIFIER_DELIVERIES
from terra.settings import Profile, RuntimeSettings, listed

# Standard Webhooks' advice, and what Svix runs: about 18 hours in six retries.
DEFAULT_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
# What push services accept as the VAPID `sub` (RFC 8292; py_vapid checks the same): an
# email as a mailto: link, or an https: origin with no path.
VAPID_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+\.[^@\s]+|mailto:[^@\s]+@localhost"
                           r"|https://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$")


class NotifierSettings(RuntimeSettings):
    uses_storage: ClassVar[bool] = False

    notify_retry_schedule_s: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_RETRY_SCHEDULE_S, description="Waits before each retry of a failed "
        "delivery, in seconds (JSON list or comma-separated; each drawn within ±10%). "
        "When they are spent the target is disabled and says why.")
    notify_max_retry_after_s: float = Field(
        default=21_600.0, gt=0, description="The longest `Retry-After` honoured (429, 502 "
        "and 503 answers wait at least that long, up to this).")
    notify_timeout_s: float = Field(
        default=10.0, gt=0, le=15, description="Longest wait for one push service or "
        "webhook answer (connect and read together).")
    notify_concurrency: int = Field(
        default=64, ge=1, description="Deliveries in flight at once per notifier process; "
        "one user's targets take at most a quarter of them (or one target's share).")
    notify_per_target_concurrency: int = Field(
        default=8, ge=1, description="Deliveries in flight at once to one target (a "
        "webhook, a browser subscription, a device): a slow one holds no more than this.")
    notify_busy_wait_s: float = Field(
        default=1.0, gt=0, description="How long a delivery to a target still at its "
        "limit after half a second waits before it is tried again, the first time (then "
        "longer each time, up to 30 s; no attempt is counted).")
    notify_allow_private_targets: bool = Field(
        default=False, description="Local profile only: let webhook and Web Push URLs reach "
        "private, link-local, CGNAT, unique-local and metadata addresses too (loopback is "
        "allowed locally anyway). Production refuses them all, loopback included.")
    notify_max_webhooks: int = Field(default=10, ge=1, description="Webhooks per user.")
    notify_max_devices: int = Field(default=20, ge=1, description="Push devices per user.")
    notify_max_web_push: int = Field(default=20, ge=1,
                                     description="Web Push subscriptions per user.")
    notify_secret_overlap_s: float = Field(
        default=86_400.0, gt=0, description="After a webhook secret is rotated, how long the "
        "old one still signs beside the new.")

    vapid_private_key: SecretStr | None = Field(
        default=None, description="The VAPID private key (PEM) that signs Web Push "
        "requests; or give it as a file (TERRA_VAPID_KEY_FILE). One of the two is "
        "required in production.")
    vapid_key_file: Path | None = Field(
        default=None, description="A file holding the VAPID private key (PEM). Locally, "
        "when absent, a key is generated there once (default: "
        "<TERRA_DATA_DIR>/notifier/vapid_private.pem) and kept.")
    vapid_subject: str = Field(
        default="mailto:operator@terra.localhost", description="The VAPID `sub` claim: a "
        "mailto: or https: URL where push services can reach the operator. The "
        "placeholder is refused in production.")
    web_push_ttl_s: int = Field(
        default=86_400, gt=0, description="How long a push service keeps a Web Push "
        "message for an offline browser (the `TTL` header).")

    expo_push_url: str = Field(
        default="https://exp.host/--/api/v2/push/send", description="Expo's send endpoint.")
    expo_receipts_url: str = Field(
        default="https://exp.host/--/api/v2/push/getReceipts",
        description="Expo's receipts endpoint.")
    expo_access_token: SecretStr | None = Field(
        default=None, description="Expo access token, when the project's push security "
        "requires one (sent as a bearer token).")
    expo_receipt_delay_s: float = Field(
        default=900.0, gt=0, description="How long after a send Expo's receipts are read "
        "(Expo keeps them a day; it advises about 15 minutes).")

    fcm_service_account_file: Path | None = Field(
        default=None, description="The Firebase service account key (JSON) whose OAuth2 "
        "token sends FCM messages; unset: FCM devices are refused at registration.")
    fcm_url: str = Field(
        default="https://fcm.googleapis.com", description="FCM HTTP v1's base URL "
        "(`/v1/projects/<project>/messages:send` is appended).")

    max_concurrent_requests: int = Field(
        default=32, ge=1, description="Requests from the gateway answered at once.")

    _listed = field_validator("notify_retry_schedule_s", mode="before")(listed)

    @field_validator("notify_retry_schedule_s")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(step <= 0 for step in value):
            raise ValueError("a retry schedule is one or more positive waits")
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not VAPID_SUBJECT.match(value):
            raise ValueError("a mailto: address (mailto:ops@example.com) or an https: origin "
                             "with no path (https://example.com)")
        return value

    @model_validator(mode="after")
    def _schedule_within_the_stream(self) -> NotifierSettings:
        """The longest a delivery can wait in all (every retry put off by the longest
        `Retry-After`) must end before its message expires from the deliveries stream."""
        longest = sum(max(step, self.notify_max_retry_after_s)
                      for step in self.notify_retry_schedule_s)
        if longest >= NOTIFIER_DELIVERIES.max_age_s:
            raise ValueError(
                f"the retry schedule can wait {longest / 3600:.0f} h in all (each step at "
                f"least TERRA_NOTIFY_MAX_RETRY_AFTER_S); the deliveries stream keeps a "
                f"message {NOTIFIER_DELIVERIES.max_age_s / 3600:.0f} h")
        return self

    @property
    def loopback_targets_allowed(self) -> bool:
        return self.profile is Profile.LOCAL

    @property
    def private_targets_allowed(self) -> bool:
        return self.profile is Profile.LOCAL and self.notify_allow_private_targets

    def vapid_file(self) -> Path:
        return self.vapid_key_file or self.data_dir / "notifier" / "vapid_private.pem"

    def placeholder_secrets(self) -> dict[str, str]:
        found = super().placeholder_secrets()
        if self.vapid_private_key is None and self.vapid_key_file is None:
            found["TERRA_VAPID_PRIVATE_KEY"] = ("no VAPID key (Web Push signs with it; or "
                                                "TERRA_VAPID_KEY_FILE)")
        if self.vapid_subject.endswith("@terra.localhost"):
            found["TERRA_VAPID_SUBJECT"] = "the placeholder VAPID subject"
        return found
