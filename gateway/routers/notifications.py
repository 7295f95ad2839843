"""Push notifications of the caller's jobs: browsers (Web Push), phones (Expo or FCM
tokens), and which events notify on which channel. notifier_service keeps and sends them;
these routes ask it for the caller, whose id comes from the access token alone."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contracts.ids import Id
from contracts.notifications import (
    MAX_DEVICE_TOKEN_LENGTH,
    MAX_URL_LENGTH,
    AddDevice,
    AddWebPush,
    Channel,
    DeviceAdded,
    DeviceView,
    GetWebPushKey,
    Language,
    ListTargets,
    NotifierDone,
    NotifyEvent,
    Platform,
    PreferencesReply,
    PreferencesView,
    PushProvider,
    RemoveDevice,
    RemoveWebPush,
    SetPreferences,
    Targets,
    WebPushAdded,
    WebPushKey,
    WebPushKeys,
    WebPushView,
)
from contracts.topology import NotifierRpc
from gateway.deps import CurrentUser, Notifier

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies -------------------------------------------------------------------------------


class PushSubscriptionBody(Body):
    """The browser's `PushSubscription`, as `JSON.stringify(subscription)` writes it, and
    the language of its notifications."""

    endpoint: str = Field(max_length=MAX_URL_LENGTH, description="The push service's URL "
                          "for this browser (https; the local profile also takes loopback).",
                          examples=["https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91b"])
    expiration_time: float | None = Field(
        default=None, alias="expirationTime", ge=0, description="When the push service ends it (ms since the "
        "epoch), as the browser says; accepted and not used: a subscription its push "
        "service has ended is removed at the next notification.", examples=[None])
    keys: WebPushKeys = Field(description="Its encryption keys (RFC 8291).")
    language: Language = Field(default=Language.EN, description="The language of its "
                               "notifications.")


class DeviceBody(Body):
    """A phone's (or app's) push token and who delivers to it."""

    token: str = Field(min_length=1, max_length=MAX_DEVICE_TOKEN_LENGTH, description="The "
                       "push token: `ExponentPushToken[…]` from Expo, or an FCM registration "
                       "token.", examples=["ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]"])
    platform: Platform = Field(description="What the app runs on.", examples=["ios"])
    provider: PushProvider = Field(description="Who delivers to it: `expo` or `fcm`.",
                                   examples=["expo"])
    language: Language = Field(default=Language.EN, description="The language of its "
                               "notifications.")


class PreferencesBody(Body):
    """Which channels notify which event: the whole choice (a `PUT` replaces the last
    one). An event left out has its default channels; an empty list turns it off."""

    events: dict[NotifyEvent, list[Channel]] = Field(
        description="Event -> the channels that notify it.",
        examples=[{"generation.completed": ["web_push", "mobile_push"],
                   "prompt.optimized": ["webhook"]}])


# --- answers ------------------------------------------------------------------------------


VAPID_KEY_EXAMPLE = ("BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts4g3FoqfkZ"
                     "AMjH1gC1ANu5Dls")


class WebPushPublicKey(BaseModel):
    """The VAPID public key: `applicationServerKey` for `pushManager.subscribe`."""

    public_key: str = Field(description="base64url of the uncompressed P-256 point "
                            "(65 bytes).", examples=[VAPID_KEY_EXAMPLE])


class WebPushRegistered(BaseModel):
    """The browser's subscription: new (201), or already known by its endpoint (200)."""

    subscription: WebPushView = Field(description="The subscription.")
    created: bool = Field(description="False when this endpoint was registered already "
                          "(its keys and language are updated).", examples=[True])


class DeviceRegistered(BaseModel):
    """The device: new (201), or already known by its token (200)."""

    device: DeviceView = Field(description="The device.")
    created: bool = Field(description="False when this token was registered already (its "
                          "platform and language are updated).", examples=[True])


class NotificationTargets(BaseModel):
    """Everything that notifies you: browsers, devices, and your preferences."""

    web_push: list[WebPushView] = Field(description="Your browsers' Web Push subscriptions.")
    devices: list[DeviceView] = Field(description="Your phones' push tokens.")
    preferences: PreferencesView = Field(description="Which channels notify which event.")


# --- routes -------------------------------------------------------------------------------


@router.get("/webpush/key", response_model=WebPushPublicKey)
async def webpush_key(caller: CurrentUser, notifier: Notifier) -> WebPushPublicKey:
    """The VAPID public key to subscribe a browser with (`applicationServerKey`)."""
    reply = await notifier.call(NotifierRpc.WEBPUSH_KEY, GetWebPushKey(), WebPushKey)
    return WebPushPublicKey(public_key=reply.public_key)


@router.post("/webpush", status_code=status.HTTP_201_CREATED,
             response_model=WebPushRegistered,
             responses={200: {"model": WebPushRegistered,
                              "description": "This endpoint was registered already."}})
async def add_webpush(body: PushSubscriptionBody, caller: CurrentUser, notifier: Notifier,
                      response: Response) -> WebPushRegistered:
    """Register this browser's `PushSubscription` (the JSON of
    `registration.pushManager.subscribe({userVisibleOnly: true, applicationServerKey})`).
    Its notifications are encrypted for it alone (RFC 8291) and carry a JSON body: `title`,
    `body`, `event`, `deep_link` and the job's ids. The same endpoint again is the same
    subscription (200)."""
    reply: WebPushAdded = await notifier.call(
        NotifierRpc.ADD_WEBPUSH,
        AddWebPush(user_id=caller.user_id, endpoint=body.endpoint,
                   keys=body.keys, language=body.language),
        WebPushAdded)
    if not reply.created:
        response.status_code = status.HTTP_200_OK
    return WebPushRegistered(subscription=reply.subscription, created=reply.created)


@router.delete("/webpush/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_webpush(subscription_id: Id, caller: CurrentUser,
                         notifier: Notifier) -> Response:
    """Stop notifying this browser (call it on `pushsubscriptionchange` or sign-out)."""
    await notifier.call(NotifierRpc.REMOVE_WEBPUSH,
                        RemoveWebPush(user_id=caller.user_id, subscription_id=subscription_id),
                        NotifierDone)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/devices", status_code=status.HTTP_201_CREATED, response_model=DeviceRegistered,
             responses={200: {"model": DeviceRegistered,
                              "description": "This token was registered already."}})
async def add_device(body: DeviceBody, caller: CurrentUser, notifier: Notifier,
                     response: Response) -> DeviceRegistered:
    """Register a phone's push token: an Expo push token (`provider: expo`, one token for
    iOS and Android) or an FCM registration token (`provider: fcm`). Its notifications
    carry the title, the text and the ids, never a prompt. The same token again is the same
    device (200); a token its provider no longer knows is removed."""
    reply: DeviceAdded = await notifier.call(
        NotifierRpc.ADD_DEVICE,
        AddDevice(user_id=caller.user_id, token=body.token, platform=body.platform,
                  provider=body.provider, language=body.language),
        DeviceAdded)
    if not reply.created:
        response.status_code = status.HTTP_200_OK
    return DeviceRegistered(device=reply.device, created=reply.created)


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_device(device_id: Id, caller: CurrentUser, notifier: Notifier) -> Response:
    """Stop notifying this device (call it on sign-out)."""
    await notifier.call(NotifierRpc.REMOVE_DEVICE,
                        RemoveDevice(user_id=caller.user_id, device_id=device_id),
                        NotifierDone)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("", response_model=NotificationTargets)
async def list_targets(caller: CurrentUser, notifier: Notifier) -> NotificationTargets:
    """Your browsers, devices and preferences (every event, with its defaults). A target
    that kept failing is disabled, and says why (`disabled_reason`)."""
    reply: Targets = await notifier.call(
        NotifierRpc.LIST_TARGETS, ListTargets(user_id=caller.user_id), Targets)
    return NotificationTargets(web_push=reply.web_push, devices=reply.devices,
                               preferences=reply.preferences)


@router.put("/preferences", response_model=PreferencesView)
async def set_preferences(body: PreferencesBody, caller: CurrentUser,
                          notifier: Notifier) -> PreferencesView:
    """Choose which channels notify which event (`web_push`, `mobile_push`, `webhook`). By
    default every ending notifies on every channel, and `prompt.optimized` on none. A
    webhook's own `events` narrow it further."""
    reply: PreferencesReply = await notifier.call(
        NotifierRpc.SET_PREFERENCES,
        SetPreferences(user_id=caller.user_id, events=body.events), PreferencesReply)
    return reply.preferences
