"""Notifications: what notifier_service answers (request/reply from the gateway), what it
keeps, and the bodies it sends.

The gateway authenticates the caller and names the user in every request; notifier_service
answers only the gateway's account (`contracts/permissions.py`) and acts on that user's
records alone, so another user's id is "not found" everywhere. Every reply is the success
model or a `NotifierFailure` naming its code and, for bad input, the field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from contracts.base import Message, Model, utcnow
from contracts.ids import Id
from contracts.topology import NotifierRpc


class NotifyEvent(StrEnum):
    """The endings a user can be notified of: `<domain>.<name>` of the event's subject."""

    TRAINING_COMPLETED = "training.completed"
    TRAINING_FAILED = "training.failed"
    TRAINING_CANCELLED = "training.cancelled"
    GENERATION_COMPLETED = "generation.completed"
    GENERATION_FAILED = "generation.failed"
    PROMPT_OPTIMIZED = "prompt.optimized"

    @property
    def domain(self) -> str:
        return self.value.split(".")[0]

    @property
    def event_name(self) -> str:
        return self.value.split(".")[1]


# Sent only by `POST /api/webhooks/{id}/test`: never from an event, never to push targets.
TEST_EVENT = "webhook.test"


class Channel(StrEnum):
    WEB_PUSH = "web_push"  # browsers (RFC 8030/8291/8292)
    MOBILE_PUSH = "mobile_push"  # the user's devices, through Expo or FCM
    WEBHOOK = "webhook"  # the user's servers (Standard Webhooks)


class PushProvider(StrEnum):
    EXPO = "expo"
    FCM = "fcm"


class Platform(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"


class Language(StrEnum):
    EN = "en"
    FR = "fr"


# What notifies when the user chose nothing: every ending on every channel, except prompt
# optimisations (seconds long, seen on the open screen), which notify once turned on.
DEFAULT_PREFERENCES: dict[NotifyEvent, tuple[Channel, ...]] = {
    event: (() if event is NotifyEvent.PROMPT_OPTIMIZED else tuple(Channel))
    for event in NotifyEvent
}

# Lengths the stores and the gateway check alike.
MAX_URL_LENGTH = 2048
MAX_DEVICE_TOKEN_LENGTH = 4096


# --- what a notification says ----------------------------------------------------------


class Notice(Model):
    """One notification's facts, taken from the event once and sent to each target in its
    own language. `deep_link` is a path the app opens (`/models/<id>`, `/images/<id>`)."""

    event: str = Field(description="A `NotifyEvent`, or `webhook.test`.")
    event_id: Id = Field(description="The message id of the event it reports.")
    user_id: Id
    occurred_at: AwareDatetime
    job_id: Id | None = None
    model_id: Id | None = None
    image_ids: list[Id] = Field(default_factory=list)
    reason: str | None = Field(default=None, max_length=2000,
                               description="Why a job failed, in words a user can read.")
    deep_link: str
    # Only web push (end-to-end encrypted) and webhooks carry it; Expo and FCM never do.
    prompt: str | None = Field(default=None, max_length=4000)


class WebhookData(Model):
    """`data` of a webhook body."""

    job_id: Id | None = None
    model_id: Id | None = None
    image_ids: list[Id] = Field(default_factory=list)
    reason: str | None = None
    deep_link: str
    prompt: str | None = Field(default=None, description="prompt.optimized: the result.")


class WebhookPayload(Model):
    """The body of every webhook request (Standard Webhooks' `type`, `timestamp`, `data`).
    Its `webhook-id` header is the delivery id: the same on every retry and redelivery."""

    type: str = Field(description="A `NotifyEvent`, or `webhook.test`.")
    timestamp: AwareDatetime
    data: WebhookData


# --- records notifier_service keeps ----------------------------------------------------


class WebPushKeys(Model):
    p256dh: str = Field(min_length=80, max_length=100, pattern=r"^[A-Za-z0-9_-]+=*$",
                        description="The browser's P-256 public key, base64url (65 bytes).")
    auth: str = Field(min_length=16, max_length=32, pattern=r"^[A-Za-z0-9_-]+=*$",
                      description="The browser's authentication secret, base64url (16 bytes).")


class TargetState(Model):
    """Shared by every target: a target that kept failing is disabled, and says why."""

    language: Language = Language.EN
    created_at: AwareDatetime = Field(default_factory=utcnow)
    disabled_at: AwareDatetime | None = None
    disabled_reason: str | None = None


class WebPushSubscription(TargetState):
    type: Literal["notify.web_push.v1"] = "notify.web_push.v1"
    subscription_id: Id
    user_id: Id
    endpoint: str = Field(max_length=MAX_URL_LENGTH)
    keys: WebPushKeys


class Device(TargetState):
    type: Literal["notify.device.v1"] = "notify.device.v1"
    device_id: Id
    user_id: Id
    token: str = Field(max_length=MAX_DEVICE_TOKEN_LENGTH)
    platform: Platform
    provider: PushProvider


class SigningSecret(Model):
    secret: str = Field(repr=False, description="`whsec_` + base64 of the key.")
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None  # a rotated-out secret signs until then


class Webhook(TargetState):
    type: Literal["notify.webhook.v1"] = "notify.webhook.v1"
    webhook_id: Id
    user_id: Id
    url: str = Field(max_length=MAX_URL_LENGTH)
    events: list[NotifyEvent] | None = None  # None: every event the preferences allow
    description: str | None = Field(default=None, max_length=200)
    secrets: list[SigningSecret] = Field(min_length=1, repr=False,
                                         description="The newest first.")


class Preferences(Model):
    type: Literal["notify.preferences.v1"] = "notify.preferences.v1"
    user_id: Id
    events: dict[NotifyEvent, list[Channel]] = Field(default_factory=dict)
    updated_at: AwareDatetime = Field(default_factory=utcnow)

    def channels(self, event: NotifyEvent) -> tuple[Channel, ...]:
        chosen = self.events.get(event)
        return DEFAULT_PREFERENCES[event] if chosen is None else tuple(chosen)


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # attempts exhausted (the target is disabled) or refused for good
    DROPPED = "dropped"  # the target was gone, removed or disabled before it went out


class Attempt(Model):
    at: AwareDatetime
    status_code: int | None = None  # the target's HTTP answer; None when none came
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int = 0


class DeliveryRecord(Model):
    """One notice to one target, under `<user_id>.<target_id>.<delivery_id>`: its id is
    derived from the event's message id and the target, so it is the same however often
    the event or the delivery comes back."""

    type: Literal["notify.delivery.v1"] = "notify.delivery.v1"
    delivery_id: Id
    user_id: Id
    target_id: Id
    channel: Channel
    notice: Notice
    state: DeliveryState = DeliveryState.PENDING
    attempts: list[Attempt] = Field(default_factory=list)
    # Attempts of this round: a redelivery asked by the user starts a new round.
    round_attempts: int = 0
    rounds: int = Field(default=0, description="Redeliveries asked so far (each round's "
                        "message on the deliveries stream has an id of its own).")
    created_at: AwareDatetime = Field(default_factory=utcnow)
    next_attempt_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None


class Deliver(Message):
    """On notifier_service's own deliveries stream: send one delivery (again). Nothing but
    notifier_service publishes here; the record holds what is sent."""

    type: Literal["notify.deliver.v1"] = "notify.deliver.v1"
    user_id: Id
    target_id: Id
    delivery_id: Id
    channel: Channel


class CheckExpoReceipts(Message):
    """On the deliveries stream: read Expo's receipts for tickets once they are due
    (Expo answers them within minutes) and remove devices it no longer knows."""

    type: Literal["notify.expo_receipts.v1"] = "notify.expo_receipts.v1"
    user_id: Id
    device_id: Id
    ticket_ids: list[str] = Field(min_length=1, max_length=1000)
    due_at: AwareDatetime


# --- requests (gateway -> notifier_service) ------------------------------------------


class UserRequest(Message):
    user_id: Id


class GetWebPushKey(Message):
    type: Literal["notify.get_webpush_key.v1"] = "notify.get_webpush_key.v1"


class AddWebPush(UserRequest):
    """Register a browser's `PushSubscription` (the same endpoint twice is one target)."""

    type: Literal["notify.add_webpush.v1"] = "notify.add_webpush.v1"
    endpoint: str = Field(max_length=MAX_URL_LENGTH)
    keys: WebPushKeys
    language: Language = Language.EN


class RemoveWebPush(UserRequest):
    type: Literal["notify.remove_webpush.v1"] = "notify.remove_webpush.v1"
    subscription_id: Id


class AddDevice(UserRequest):
    """Register a phone (or web app) push token (the same token twice is one device)."""

    type: Literal["notify.add_device.v1"] = "notify.add_device.v1"
    token: str = Field(min_length=1, max_length=MAX_DEVICE_TOKEN_LENGTH)
    platform: Platform
    provider: PushProvider
    language: Language = Language.EN


class RemoveDevice(UserRequest):
    type: Literal["notify.remove_device.v1"] = "notify.remove_device.v1"
    device_id: Id


class ListTargets(UserRequest):
    type: Literal["notify.list_targets.v1"] = "notify.list_targets.v1"


class SetPreferences(UserRequest):
    """Which channels notify which event; an event left out keeps its default."""

    type: Literal["notify.set_preferences.v1"] = "notify.set_preferences.v1"
    events: dict[NotifyEvent, list[Channel]]


class CreateWebhook(UserRequest):
    type: Literal["notify.create_webhook.v1"] = "notify.create_webhook.v1"
    url: str = Field(max_length=MAX_URL_LENGTH)
    events: list[NotifyEvent] | None = None
    description: str | None = Field(default=None, max_length=200)


class WebhookRequest(UserRequest):
    webhook_id: Id


class ListWebhooks(UserRequest):
    type: Literal["notify.list_webhooks.v1"] = "notify.list_webhooks.v1"


class GetWebhook(WebhookRequest):
    type: Literal["notify.get_webhook.v1"] = "notify.get_webhook.v1"


class UpdateWebhook(WebhookRequest):
    """Change what is given; `enabled: true` turns a disabled webhook back on."""

    type: Literal["notify.update_webhook.v1"] = "notify.update_webhook.v1"
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    events: list[NotifyEvent] | None = None
    all_events: bool = Field(default=False, description="Forget `events`: every event.")
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class DeleteWebhook(WebhookRequest):
    type: Literal["notify.delete_webhook.v1"] = "notify.delete_webhook.v1"


class RotateWebhookSecret(WebhookRequest):
    type: Literal["notify.rotate_webhook_secret.v1"] = "notify.rotate_webhook_secret.v1"


class TestWebhook(WebhookRequest):
    __test__ = False  # not a pytest test class, whatever its name says

    type: Literal["notify.test_webhook.v1"] = "notify.test_webhook.v1"


class RedeliverWebhook(WebhookRequest):
    type: Literal["notify.redeliver_webhook.v1"] = "notify.redeliver_webhook.v1"
    delivery_id: Id


class ListDeliveries(WebhookRequest):
    type: Literal["notify.list_deliveries.v1"] = "notify.list_deliveries.v1"


# --- replies (notifier_service -> gateway) -------------------------------------------


class NotifierErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"  # 422, naming the field
    NOT_FOUND = "not_found"  # 404: absent, or another user's
    LIMIT_REACHED = "limit_reached"  # 409: too many targets of one kind
    UNAVAILABLE = "unavailable"  # 503


class NotifierFailure(Message):
    type: Literal["notify.failure.v1"] = "notify.failure.v1"
    code: NotifierErrorCode
    detail: str
    field: str | None = Field(default=None, description="The request field at fault.")


class WebPushKey(Message):
    type: Literal["notify.webpush_key.v1"] = "notify.webpush_key.v1"
    public_key: str = Field(description="The VAPID public key (`applicationServerKey`), "
                            "base64url of the uncompressed P-256 point.")


class TargetView(Model):
    id: Id
    language: Language
    created_at: AwareDatetime
    enabled: bool
    disabled_at: AwareDatetime | None = None
    disabled_reason: str | None = None


class WebPushView(TargetView):
    endpoint_origin: str = Field(description="Scheme and host of the push service.")


class DeviceView(TargetView):
    platform: Platform
    provider: PushProvider
    token_hint: str = Field(description="The token's last characters, to tell devices apart.")


class PreferencesView(Model):
    events: dict[NotifyEvent, list[Channel]] = Field(
        description="Every event, with the channels that notify it (defaults included).")


class Targets(Message):
    type: Literal["notify.targets.v1"] = "notify.targets.v1"
    web_push: list[WebPushView]
    devices: list[DeviceView]
    preferences: PreferencesView


class WebPushAdded(Message):
    type: Literal["notify.webpush_added.v1"] = "notify.webpush_added.v1"
    subscription: WebPushView
    created: bool


class DeviceAdded(Message):
    type: Literal["notify.device_added.v1"] = "notify.device_added.v1"
    device: DeviceView
    created: bool


class PreferencesReply(Message):
    type: Literal["notify.preferences_reply.v1"] = "notify.preferences_reply.v1"
    preferences: PreferencesView


class WebhookView(TargetView):
    url: str
    events: list[NotifyEvent] | None
    description: str | None = None
    secret_rotated_at: AwareDatetime | None = None
    previous_secret_expires_at: AwareDatetime | None = None


class WebhookReply(Message):
    type: Literal["notify.webhook_reply.v1"] = "notify.webhook_reply.v1"
    webhook: WebhookView
    secret: str | None = Field(default=None, description="Only when created or rotated: "
                               "shown once, never again.")


class WebhookList(Message):
    type: Literal["notify.webhook_list.v1"] = "notify.webhook_list.v1"
    webhooks: list[WebhookView]


class DeliveryView(Model):
    id: Id = Field(description="The `webhook-id` header it is sent with.")
    event: str
    event_id: Id
    state: DeliveryState
    attempts: list[Attempt]
    created_at: AwareDatetime
    next_attempt_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None


class DeliveryList(Message):
    type: Literal["notify.delivery_list.v1"] = "notify.delivery_list.v1"
    deliveries: list[DeliveryView] = Field(description="The newest first.")


class DeliveryQueued(Message):
    type: Literal["notify.delivery_queued.v1"] = "notify.delivery_queued.v1"
    delivery_id: Id


class NotifierDone(Message):
    type: Literal["notify.done.v1"] = "notify.done.v1"


# The request each `NotifierRpc` subject carries: what notifier_service decodes there.
REQUESTS: dict[NotifierRpc, type[Message]] = {
    NotifierRpc.WEBPUSH_KEY: GetWebPushKey,
    NotifierRpc.ADD_WEBPUSH: AddWebPush,
    NotifierRpc.REMOVE_WEBPUSH: RemoveWebPush,
    NotifierRpc.ADD_DEVICE: AddDevice,
    NotifierRpc.REMOVE_DEVICE: RemoveDevice,
    NotifierRpc.LIST_TARGETS: ListTargets,
    NotifierRpc.SET_PREFERENCES: SetPreferences,
    NotifierRpc.CREATE_WEBHOOK: CreateWebhook,
    NotifierRpc.LIST_WEBHOOKS: ListWebhooks,
    NotifierRpc.GET_WEBHOOK: GetWebhook,
    NotifierRpc.UPDATE_WEBHOOK: UpdateWebhook,
    NotifierRpc.DELETE_WEBHOOK: DeleteWebhook,
    NotifierRpc.ROTATE_WEBHOOK_SECRET: RotateWebhookSecret,
    NotifierRpc.TEST_WEBHOOK: TestWebhook,
    NotifierRpc.REDELIVER_WEBHOOK: RedeliverWebhook,
    NotifierRpc.LIST_DELIVERIES: ListDeliveries,
}
