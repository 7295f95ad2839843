"""What the gateway asks of notifier_service, one method per `NotifierRpc` subject: each
takes the request (whose `user_id` the gateway authenticated) and returns the success
reply, or raises a `NotifierError`. Every record is read under the caller's own key, so
another user's id is `not_found`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from contracts.base import Message, utcnow
from contracts.ids import new_id
from contracts.notifications import (
    AddDevice,
    AddWebPush,
    Channel,
    CreateWebhook,
    DeleteWebhook,
    DeliveryList,
    DeliveryQueued,
    DeliveryRecord,
    DeliveryState,
    Device,
    DeviceAdded,
    GetWebhook,
    GetWebPushKey,
    ListDeliveries,
    ListTargets,
    ListWebhooks,
    NotifierDone,
    NotifierErrorCode,
    Preferences,
    PreferencesReply,
    PushProvider,
    RedeliverWebhook,
    RemoveDevice,
    RemoveWebPush,
    RotateWebhookSecret,
    SetPreferences,
    Targets,
    TestWebhook,
    UpdateWebhook,
    Webhook,
    WebhookList,
    WebhookReply,
    WebPushAdded,
    WebPushKey,
    WebPushSubscription,
)
from notifier_service import domain
from notifier_service.delivery import delivery_id, target_id
from notifier_service.domain import NotifierError, invalid, not_found
from notifier_service.stores import NotifierStores, WorkQueue

log = logging.getLogger(__name__)

# Why a URL may not be a target (its scheme, its address), or None when it may.
UrlCheck = Callable[[str], Awaitable[str | None]]

RECENT_DELIVERIES = 100  # what `GET /api/webhooks/{id}/deliveries` shows


@dataclass(frozen=True)
class Limits:
    max_web_push: int = 20
    max_devices: int = 20
    max_webhooks: int = 10
    secret_overlap_s: float = 86_400.0


class NotifierHandlers:
    def __init__(self, stores: NotifierStores, queue: WorkQueue, *, vapid_public_key: str,
                 check_url: UrlCheck, new_secret: Callable[[], str],
                 fcm_configured: bool, limits: Limits = Limits(),
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.stores = stores
        self.queue = queue
        self.vapid_public_key = vapid_public_key
        self.check_url = check_url
        self.new_secret = new_secret
        self.fcm_configured = fcm_configured
        self.limits = limits
        self.clock = clock

    # --- Web Push ------------------------------------------------------------------------

    async def webpush_key(self, request: GetWebPushKey) -> WebPushKey:
        return WebPushKey(public_key=self.vapid_public_key,
                          correlation_id=request.correlation_id)

    async def add_webpush(self, request: AddWebPush) -> WebPushAdded:
        """The same endpoint twice is the one subscription (new keys, enabled again)."""
        domain.check_web_push_keys(request.keys)
        await self._check_url(request.endpoint, "endpoint")
        store, user = self.stores.web_push, request.user_id
        subscription = WebPushSubscription(
            subscription_id=target_id(user, request.endpoint), user_id=user,
            endpoint=request.endpoint, keys=request.keys, language=request.language,
            created_at=self.clock())
        created = await self._register(store, subscription, subscription.subscription_id,
                                       self.limits.max_web_push, "endpoint",
                                       "Web Push subscriptions",
                                       {"keys": request.keys, "language": request.language})
        await self._claim(self.stores.web_push_owners, self.stores.web_push, request.endpoint,
                          user, subscription.subscription_id)
        return WebPushAdded(subscription=domain.web_push_view(created[0]), created=created[1],
                            correlation_id=request.correlation_id)

    async def remove_webpush(self, request: RemoveWebPush) -> NotifierDone:
        await self._remove(self.stores.web_push, request.user_id, request.subscription_id,
                           "subscription", "subscription_id")
        return NotifierDone(correlation_id=request.correlation_id)

    # --- devices ---------------------------------------------------------------------------

    async def add_device(self, request: AddDevice) -> DeviceAdded:
        """The same token twice is the one device (its platform and language updated)."""
        if request.provider is PushProvider.FCM and not self.fcm_configured:
            raise invalid("FCM is not configured on this server; use Expo.", "provider")
        domain.check_device_token(request.token, request.provider)
        user = request.user_id
        device = Device(device_id=target_id(user, request.token), user_id=user,
                        token=request.token, platform=request.platform,
                        provider=request.provider, language=request.language,
                        created_at=self.clock())
        stored, created = await self._register(
            self.stores.devices, device, device.device_id, self.limits.max_devices, "token",
            "devices", {"platform": request.platform, "provider": request.provider,
                        "language": request.language})
        await self._claim(self.stores.device_owners, self.stores.devices, request.token, user,
                          device.device_id)
        return DeviceAdded(device=domain.device_view(stored), created=created,
                           correlation_id=request.correlation_id)

    async def remove_device(self, request: RemoveDevice) -> NotifierDone:
        await self._remove(self.stores.devices, request.user_id, request.device_id,
                           "device", "device_id")
        return NotifierDone(correlation_id=request.correlation_id)

    # --- targets and preferences ---------------------------------------------------------

    async def list_targets(self, request: ListTargets) -> Targets:
        user = request.user_id
        return Targets(
            web_push=[domain.web_push_view(s) for s in await self.stores.web_push.list(user)],
            devices=[domain.device_view(d) for d in await self.stores.devices.list(user)],
            preferences=domain.preferences_view(await self.stores.preferences.get(user)),
            correlation_id=request.correlation_id)

    async def set_preferences(self, request: SetPreferences) -> PreferencesReply:
        """The choices given replace the stored ones; an event left out has its default."""
        preferences = Preferences(user_id=request.user_id, events=domain.chosen(request.events),
                                  updated_at=self.clock())
        await self.stores.preferences.put(preferences)
        return PreferencesReply(preferences=domain.preferences_view(preferences),
                                correlation_id=request.correlation_id)

    # --- webhooks ----------------------------------------------------------------------------

    async def create_webhook(self, request: CreateWebhook) -> WebhookReply:
        """A new webhook and its signing secret, shown in this reply only."""
        await self._check_url(request.url, "url")
        held = await self.stores.webhooks.list(request.user_id)
        domain.check_room(len(held), self.limits.max_webhooks, "url", "webhooks")
        now, secret = self.clock(), self.new_secret()
        webhook = Webhook(webhook_id=new_id(), user_id=request.user_id, url=request.url,
                          events=_events(request.events), description=request.description,
                          secrets=domain.first_secret(secret, now), created_at=now)
        await self.stores.webhooks.create(webhook)  # a fresh id: never taken
        return self._reply(webhook, request, secret)

    async def list_webhooks(self, request: ListWebhooks) -> WebhookList:
        now = self.clock()
        return WebhookList(webhooks=[domain.webhook_view(w, now) for w in
                                     await self.stores.webhooks.list(request.user_id)],
                           correlation_id=request.correlation_id)

    async def get_webhook(self, request: GetWebhook) -> WebhookReply:
        return self._reply(await self._webhook(request.user_id, request.webhook_id), request)

    async def update_webhook(self, request: UpdateWebhook) -> WebhookReply:
        """What is given changes; `enabled: true` turns a disabled webhook back on."""
        if request.url is not None:
            await self._check_url(request.url, "url")
        now = self.clock()

        def change(webhook: Webhook) -> Webhook:
            update: dict = {}
            if request.url is not None:
                update["url"] = request.url
            if request.all_events:
                update["events"] = None
            elif request.events is not None:
                update["events"] = _events(request.events)
            if request.description is not None:
                update["description"] = request.description or None
            changed = webhook.model_copy(update=update)
            if request.enabled is True:
                changed = domain.enabled_again(changed)
            elif request.enabled is False and domain.is_enabled(changed):
                changed = domain.disabled(changed, "Turned off by its owner.", now)
            return changed

        return self._reply(await self._update_webhook(request, change), request)

    async def delete_webhook(self, request: DeleteWebhook) -> NotifierDone:
        await self._remove(self.stores.webhooks, request.user_id, request.webhook_id,
                           "webhook", "webhook_id")
        await self.stores.deliveries.erase_target(request.user_id, request.webhook_id)
        return NotifierDone(correlation_id=request.correlation_id)

    async def rotate_webhook_secret(self, request: RotateWebhookSecret) -> WebhookReply:
        """A new secret signs from now; the one it replaces signs beside it for a while
        (`notify_secret_overlap_s`), so receivers can switch without missing a request."""
        now, secret = self.clock(), self.new_secret()
        webhook = await self._update_webhook(request, lambda w: w.model_copy(update={
            "secrets": domain.rotated(w.secrets, secret, now, self.limits.secret_overlap_s)}))
        return self._reply(webhook, request, secret)

    async def test_webhook(self, request: TestWebhook) -> DeliveryQueued:
        """A `webhook.test` notice of its own, delivered like any other."""
        webhook = await self._sendable(request.user_id, request.webhook_id)
        notice = domain.trial_notice(request.user_id, self.clock())
        record = DeliveryRecord(
            delivery_id=delivery_id(notice.event_id, webhook.webhook_id),
            user_id=request.user_id, target_id=webhook.webhook_id, channel=Channel.WEBHOOK,
            notice=notice, created_at=self.clock())
        await self.stores.deliveries.create(record)
        await self.queue.deliver(domain.deliver_of(record), record.delivery_id)
        return DeliveryQueued(delivery_id=record.delivery_id,
                              correlation_id=request.correlation_id)

    async def redeliver_webhook(self, request: RedeliverWebhook) -> DeliveryQueued:
        """Send a past delivery again, under the same `webhook-id`, on a fresh schedule.
        One still pending is queued already; its round's message is published again (the
        stream drops it as a repeat, unless a crash came between the two writes)."""
        user, webhook_id = request.user_id, request.webhook_id
        await self._sendable(user, webhook_id)
        deliveries = self.stores.deliveries
        if await deliveries.get(user, webhook_id, request.delivery_id) is None:
            raise not_found("delivery", "delivery_id")
        again = await deliveries.update(
            user, webhook_id, request.delivery_id,
            lambda r: None if r.state is DeliveryState.PENDING else domain.new_round(r))
        current = again or await deliveries.get(user, webhook_id, request.delivery_id)
        if current is not None and current.state is DeliveryState.PENDING:
            # Each round its own message id (the first round's is the delivery id).
            round_id = (f"{current.delivery_id}-r{current.rounds}" if current.rounds
                        else current.delivery_id)
            await self.queue.deliver(domain.deliver_of(current, round_id), round_id)
        return DeliveryQueued(delivery_id=request.delivery_id,
                              correlation_id=request.correlation_id)

    async def list_deliveries(self, request: ListDeliveries) -> DeliveryList:
        await self._webhook(request.user_id, request.webhook_id)
        records = await self.stores.deliveries.of_target(request.user_id, request.webhook_id)
        return DeliveryList(deliveries=[domain.delivery_view(r)
                                        for r in records[:RECENT_DELIVERIES]],
                            correlation_id=request.correlation_id)

    # --- shared steps ------------------------------------------------------------------------

    async def _check_url(self, url: str, field: str) -> None:
        if (why := await self.check_url(url)) is not None:
            raise invalid(why, field)

    async def _register(self, store, record, record_id: str, cap: int, field: str,
                        what: str, refreshed: dict):
        """Store a target under its derived id: the one already there is refreshed (and
        enabled again); a new one must fit under the cap. (stored, created)."""
        user = record.user_id

        def refresh(current):
            return domain.enabled_again(current.model_copy(update=refreshed))

        for _ in range(3):  # a concurrent delete or create between the steps: look again
            try:
                return await store.update(user, record_id, refresh), False
            except KeyError:
                pass
            domain.check_room(len(await store.list(user)), cap, field, what)
            if await store.create(record):
                return record, True
        raise NotifierError(NotifierErrorCode.UNAVAILABLE,
                            "The target kept changing; retry.", field)

    async def _claim(self, owners, store, address: str, user_id: str,
                     record_id: str) -> None:
        """The caller owns this phone or browser now: the account that registered it
        before (it signed out, another signed in) no longer reaches it."""
        before = await owners.claim(address, user_id, record_id)
        if before is not None:
            await store.delete(*before)
            log.info("a phone or browser passed to another account; the previous one's "
                     "registration removed", extra={"target_id": before[1]})

    async def _remove(self, store, user_id: str, record_id: str, what: str,
                      field: str) -> None:
        record = await store.get(user_id, record_id)
        if record is None:
            raise not_found(what, field)
        await store.delete(user_id, record_id)
        await self.stores.release(record)

    async def _webhook(self, user_id: str, webhook_id: str) -> Webhook:
        webhook = await self.stores.webhooks.get(user_id, webhook_id)
        if webhook is None:
            raise not_found("webhook", "webhook_id")
        return webhook

    async def _sendable(self, user_id: str, webhook_id: str) -> Webhook:
        webhook = await self._webhook(user_id, webhook_id)
        if not domain.is_enabled(webhook):
            raise invalid("The webhook is disabled; enable it first.", "webhook_id")
        return webhook

    async def _update_webhook(self, request, change: Callable[[Webhook], Webhook]) -> Webhook:
        try:
            return await self.stores.webhooks.update(request.user_id, request.webhook_id,
                                                     change)
        except KeyError:
            raise not_found("webhook", "webhook_id") from None

    def _reply(self, webhook: Webhook, request: Message,
               secret: str | None = None) -> WebhookReply:
        return WebhookReply(webhook=domain.webhook_view(webhook, self.clock()), secret=secret,
                            correlation_id=request.correlation_id)


def _events(events: list | None) -> list | None:
    """Each event once; an empty list is kept (a webhook paused for every event)."""
    return None if events is None else list(dict.fromkeys(events))
