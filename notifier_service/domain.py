"""notifier_service's rules, pure: what a request may not do (`NotifierError`), what a
target shows of itself (views never hold a secret or a whole token), how secrets rotate,
and what an attempt does to its delivery record."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from contracts.base import utcnow
from contracts.ids import new_id
from contracts.notifications import (
    TEST_EVENT,
    Attempt,
    Channel,
    Deliver,
    DeliveryRecord,
    DeliveryState,
    DeliveryView,
    Device,
    DeviceView,
    Notice,
    NotifierErrorCode,
    NotifyEvent,
    Preferences,
    PreferencesView,
    PushProvider,
    SigningSecret,
    TargetState,
    Webhook,
    WebhookView,
    WebPushKeys,
    WebPushSubscription,
    WebPushView,
)
from notifier_service.delivery import Outcome, OutcomeKind
from terra.errors import TerraError

TOKEN_HINT_LENGTH = 6


class NotifierError(TerraError):
    """A request refused: its code, words for the caller, and the field at fault."""

    def __init__(self, code: NotifierErrorCode, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


def not_found(what: str, field: str | None = None) -> NotifierError:
    """Absent, or another user's: the answer is the same."""
    return NotifierError(NotifierErrorCode.NOT_FOUND, f"No such {what}.", field)


def invalid(detail: str, field: str) -> NotifierError:
    return NotifierError(NotifierErrorCode.INVALID_REQUEST, detail, field)


def check_room(held: int, cap: int, field: str, what: str) -> None:
    """A user holding `held` targets of a kind may add one more while under `cap`."""
    if held >= cap:
        raise NotifierError(NotifierErrorCode.LIMIT_REACHED,
                            f"At most {cap} {what} per account; remove one first.", field)


# --- targets ----------------------------------------------------------------------------


def is_enabled(target: TargetState) -> bool:
    return target.disabled_at is None


def wants(webhook: Webhook, event: str) -> bool:
    """Whether a webhook takes `event` (its own filter; preferences decide before it)."""
    return webhook.events is None or event in webhook.events


def disabled(target: TargetState, reason: str, now: datetime) -> TargetState:
    return target.model_copy(update={"disabled_at": now, "disabled_reason": reason[:500]})


def enabled_again(target: TargetState) -> TargetState:
    return target.model_copy(update={"disabled_at": None, "disabled_reason": None})


def exhausted_reason(attempts: int, last: Outcome) -> str:
    return f"{attempts} attempts failed; last: {last.summary}"


# --- secrets ----------------------------------------------------------------------------


def first_secret(secret: str, now: datetime) -> list[SigningSecret]:
    return [SigningSecret(secret=secret, created_at=now)]


def live_secrets(secrets: list[SigningSecret], now: datetime) -> list[SigningSecret]:
    """The secrets that still sign: the newest, and rotated-out ones not yet expired."""
    return [s for s in secrets if s.expires_at is None or s.expires_at > now]


def rotated(secrets: list[SigningSecret], new: str, now: datetime,
            overlap_s: float) -> list[SigningSecret]:
    """The new secret first; the one it replaces signs `overlap_s` more; expired ones go
    (an older rotated-out secret keeps its own, earlier, expiry)."""
    until = now + timedelta(seconds=overlap_s)
    older = [s if s.expires_at is not None else s.model_copy(update={"expires_at": until})
             for s in live_secrets(secrets, now)]
    return [SigningSecret(secret=new, created_at=now), *older]


# --- what the caller sees (no secret, no whole token) ---------------------------------


def _state(target: TargetState) -> dict:
    return {"language": target.language, "created_at": target.created_at,
            "enabled": is_enabled(target), "disabled_at": target.disabled_at,
            "disabled_reason": target.disabled_reason}


def endpoint_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def web_push_view(subscription: WebPushSubscription) -> WebPushView:
    return WebPushView(id=subscription.subscription_id,
                       endpoint_origin=endpoint_origin(subscription.endpoint),
                       **_state(subscription))


def token_hint(token: str) -> str:
    return token[-TOKEN_HINT_LENGTH:]


def device_view(device: Device) -> DeviceView:
    return DeviceView(id=device.device_id, platform=device.platform,
                      provider=device.provider, token_hint=token_hint(device.token),
                      **_state(device))


def webhook_view(webhook: Webhook, now: datetime | None = None) -> WebhookView:
    now = now or utcnow()
    newest, *older = webhook.secrets
    still_signing = [s.expires_at for s in older if s.expires_at and s.expires_at > now]
    return WebhookView(
        id=webhook.webhook_id, url=webhook.url, events=webhook.events,
        description=webhook.description,
        secret_rotated_at=newest.created_at if newest.created_at != webhook.created_at
        else None,
        previous_secret_expires_at=max(still_signing) if still_signing else None,
        **_state(webhook))


def preferences_view(preferences: Preferences) -> PreferencesView:
    return PreferencesView(events={event: list(preferences.channels(event))
                                   for event in NotifyEvent})


def chosen(events: dict[NotifyEvent, list[Channel]]) -> dict[NotifyEvent, list[Channel]]:
    """The choices as stored: each channel once, in the order given."""
    return {event: list(dict.fromkeys(channels)) for event, channels in events.items()}


def delivery_view(record: DeliveryRecord) -> DeliveryView:
    return DeliveryView(id=record.delivery_id, event=record.notice.event,
                        event_id=record.notice.event_id, state=record.state,
                        attempts=record.attempts, created_at=record.created_at,
                        next_attempt_at=record.next_attempt_at,
                        delivered_at=record.delivered_at)


# --- deliveries ---------------------------------------------------------------------------


def trial_notice(user_id: str, now: datetime | None = None) -> Notice:
    """What `POST /api/webhooks/{id}/test` sends: a notice of its own event id."""
    return Notice(event=TEST_EVENT, event_id=new_id(), user_id=user_id,
                  occurred_at=now or utcnow(), deep_link="/")


def attempt_of(outcome: Outcome, at: datetime) -> Attempt:
    return Attempt(at=at, status_code=outcome.status_code,
                   error=outcome.error[:500] if outcome.error else None,
                   duration_ms=outcome.duration_ms)


def after_attempt(record: DeliveryRecord, outcome: Outcome, at: datetime,
                  wait_s: float | None) -> DeliveryRecord:
    """The record once an attempt came to `outcome`. For a RETRY, `wait_s` is the wait
    before the next attempt, None when the schedule is spent (the delivery failed)."""
    update: dict = {"attempts": [*record.attempts, attempt_of(outcome, at)],
                    "round_attempts": record.round_attempts + 1, "next_attempt_at": None}
    if outcome.kind is OutcomeKind.DELIVERED:
        update.update(state=DeliveryState.DELIVERED, delivered_at=at)
    elif outcome.kind is OutcomeKind.GONE:
        update.update(state=DeliveryState.DROPPED)
    elif outcome.kind is OutcomeKind.REFUSED or wait_s is None:
        update.update(state=DeliveryState.FAILED)
    else:
        update.update(next_attempt_at=at + timedelta(seconds=wait_s))
    return record.model_copy(update=update)


def new_round(record: DeliveryRecord) -> DeliveryRecord:
    """A redelivery the user asked for: the schedule starts again."""
    return record.model_copy(update={"state": DeliveryState.PENDING, "round_attempts": 0,
                                     "rounds": record.rounds + 1,
                                     "next_attempt_at": None, "delivered_at": None})


def dropped(record: DeliveryRecord) -> DeliveryRecord:
    return record.model_copy(update={"state": DeliveryState.DROPPED, "next_attempt_at": None})


def deliver_of(record: DeliveryRecord, message_id: str | None = None) -> Deliver:
    return Deliver(message_id=message_id or record.delivery_id, user_id=record.user_id,
                   target_id=record.target_id, delivery_id=record.delivery_id,
                   channel=record.channel, correlation_id=record.notice.event_id)


# --- what a registration must hold ------------------------------------------------------

_EXPO_TOKEN = re.compile(r"^Expo(nent)?PushToken\[[^\]]+\]$")
P256_POINT_BYTES = 65  # an uncompressed P-256 public key: 0x04, x, y
AUTH_SECRET_BYTES = 16


def check_web_push_keys(keys: WebPushKeys) -> None:
    """RFC 8291's keys: the browser's P-256 point and its 16-byte secret."""
    point = _base64url(keys.p256dh)
    if point is None or len(point) != P256_POINT_BYTES or point[0] != 4:
        raise invalid("Not an uncompressed P-256 public key (65 bytes, base64url).",
                      "keys.p256dh")
    secret = _base64url(keys.auth)
    if secret is None or len(secret) != AUTH_SECRET_BYTES:
        raise invalid("Not a 16-byte authentication secret (base64url).", "keys.auth")


def check_device_token(token: str, provider: PushProvider) -> None:
    if provider is PushProvider.EXPO and not _EXPO_TOKEN.match(token):
        raise invalid("Not an Expo push token (ExponentPushToken[…]).", "token")
    if any(c.isspace() for c in token):
        raise invalid("A push token holds no whitespace.", "token")


def _base64url(value: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (ValueError, binascii.Error):
        return None
