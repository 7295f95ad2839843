"""notifier_service's one wiring place: its stores, senders and use cases from their
dependencies (tests pass fakes by name), the requests it answers and the consumers it
pulls.

Each request subject carries one request model and has one use case; `terra.runtime.
requests` decodes, runs it and turns every failure into a `NotifierFailure`
(`NotifierFailures`), so the gateway always gets a reply, and bad input names its field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.oauth2 import service_account
from nats.aio.client import Client as NatsClient
from pydantic import ValidationError

from contracts.base import Message
from contracts.notifications import (
    REQUESTS,
    Channel,
    NotifierErrorCode,
    NotifierFailure,
    PushProvider,
)
from contracts.permissions import account_of
from contracts.topology import (
    GATEWAY,
    NOTIFIER,
    NOTIFIER_EVENTS,
    NOTIFIER_QUEUE_GROUP,
    NOTIFIER_RECEIPTS,
    NOTIFIER_SENDS,
    NotifierRpc,
    account_cleanup_consumer,
)
from notifier_service import egress
from notifier_service.channels.expo import ExpoSender
from notifier_service.channels.fcm import FcmSender
from notifier_service.channels.webhooks import WebhookSender, new_secret
from notifier_service.channels.webpush import WebPushSender
from notifier_service.config import NotifierSettings
from notifier_service.domain import NotifierError
from notifier_service.fanout import FanOut
from notifier_service.handlers import Limits, NotifierHandlers
from notifier_service.sending import ReadReceipts, Receipts, Senders, Sending, SendPolicy
from notifier_service.stores import NotifierStores, WorkQueue
from notifier_service.vapid import load_vapid
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import erasing, fields_of
from terra.nats.connection import jetstream
from terra.runtime import requests
from terra.runtime.service import Consumer, Responder, ServiceParts

ACCOUNT_CLEANUP = account_cleanup_consumer("notifier")
LIST_TIMEOUT_S = 10.0  # a listing the broker stops answering is a 503, not a hang
# Events fanned out at once (each a few KV writes and publishes), receipt checks at once.
FAN_OUT_CONCURRENCY = 16
RECEIPT_CONCURRENCY = 4

# Each request subject, the model it carries (`contracts.notifications.REQUESTS`), and the
# use case that answers it.
USE_CASES: dict[NotifierRpc, str] = {
    NotifierRpc.WEBPUSH_KEY: "webpush_key",
    NotifierRpc.ADD_WEBPUSH: "add_webpush",
    NotifierRpc.REMOVE_WEBPUSH: "remove_webpush",
    NotifierRpc.ADD_DEVICE: "add_device",
    NotifierRpc.REMOVE_DEVICE: "remove_device",
    NotifierRpc.LIST_TARGETS: "list_targets",
    NotifierRpc.SET_PREFERENCES: "set_preferences",
    NotifierRpc.CREATE_WEBHOOK: "create_webhook",
    NotifierRpc.LIST_WEBHOOKS: "list_webhooks",
    NotifierRpc.GET_WEBHOOK: "get_webhook",
    NotifierRpc.UPDATE_WEBHOOK: "update_webhook",
    NotifierRpc.DELETE_WEBHOOK: "delete_webhook",
    NotifierRpc.ROTATE_WEBHOOK_SECRET: "rotate_webhook_secret",
    NotifierRpc.TEST_WEBHOOK: "test_webhook",
    NotifierRpc.REDELIVER_WEBHOOK: "redeliver_webhook",
    NotifierRpc.LIST_DELIVERIES: "list_deliveries",
}
ROUTES: tuple[tuple[NotifierRpc, Any, str], ...] = tuple(
    (subject, REQUESTS[subject], use_case) for subject, use_case in USE_CASES.items())


class NotifierFailures:
    """How notifier_service refuses: a `NotifierFailure`, naming the field at fault."""

    refusal = NotifierError

    def invalid(self, model: Any, error: ValidationError) -> NotifierFailure:
        return NotifierFailure(code=NotifierErrorCode.INVALID_REQUEST,
                               detail=f"Invalid fields: {fields_of(error)}",
                               field=_field_of(model, error))

    def refused(self, error: NotifierError, request: Message) -> NotifierFailure:
        return NotifierFailure(code=error.code, detail=error.detail, field=error.field,
                               correlation_id=request.correlation_id)

    def unavailable(self, request: Message) -> NotifierFailure:
        return NotifierFailure(code=NotifierErrorCode.UNAVAILABLE,
                               detail="The notifier could not complete the request; "
                               "retry later.", correlation_id=request.correlation_id)


FAILURES = NotifierFailures()


def send_policy(settings: NotifierSettings) -> SendPolicy:
    return SendPolicy(schedule_s=settings.notify_retry_schedule_s,
                      max_retry_after_s=settings.notify_max_retry_after_s,
                      timeout_s=settings.notify_timeout_s,
                      busy_wait_s=settings.notify_busy_wait_s,
                      per_target=settings.notify_per_target_concurrency,
                      # One user's targets all hanging hold a quarter of the room at most.
                      per_user=max(settings.notify_per_target_concurrency,
                                   settings.notify_concurrency // 4),
                      expo_receipt_delay_s=settings.expo_receipt_delay_s)


def limits(settings: NotifierSettings) -> Limits:
    return Limits(max_web_push=settings.notify_max_web_push,
                  max_devices=settings.notify_max_devices,
                  max_webhooks=settings.notify_max_webhooks,
                  secret_overlap_s=settings.notify_secret_overlap_s)


class Outbound:
    """Every send goes through one egress session (the guarded resolver, no redirects):
    the channels' senders over it, and what registration asks of them (the VAPID public
    key, URL checks by the same policy, webhook secrets)."""

    def __init__(self, settings: NotifierSettings, *,
                 fcm_credentials: service_account.Credentials | None = None) -> None:
        self.policy = egress.EgressPolicy.of(settings)
        self.session = egress.egress_session(self.policy, settings.notify_timeout_s,
                                      limit=settings.notify_concurrency)
        web_push = WebPushSender(self.session, load_vapid(settings), settings.vapid_subject,
                                 settings.web_push_ttl_s)
        self.expo = ExpoSender(self.session, settings)
        self.fcm = FcmSender(self.session, settings, credentials=fcm_credentials)
        self.senders: dict = {Channel.WEB_PUSH: web_push,
                              Channel.WEBHOOK: WebhookSender(self.session),
                              PushProvider.EXPO: self.expo, PushProvider.FCM: self.fcm}
        self.vapid_public_key = web_push.public_key
        self.new_secret = new_secret

    async def check_url(self, url: str) -> str | None:
        return await egress.check_url(url, self.policy)

    async def close(self) -> None:
        await self.session.close()


async def bootstrap(connection: NatsClient, settings: NotifierSettings, *,
                    senders: Senders | None = None,
                    read_receipts: ReadReceipts | None = None,
                    fcm_credentials: service_account.Credentials | None = None,
                    check_url: Callable[[str], Awaitable[str | None]] | None = None
                    ) -> ServiceParts:
    """Tests pass fake `senders` (by channel, and by provider for devices), a fake
    `read_receipts`, FCM `fcm_credentials` made in the test, or their own `check_url`."""
    js = jetstream(connection, NOTIFIER)
    stores = await NotifierStores.open(js, list_timeout_s=LIST_TIMEOUT_S)
    queue = WorkQueue(js)
    outbound = Outbound(settings, fcm_credentials=fcm_credentials)
    handlers = NotifierHandlers(
        stores, queue, vapid_public_key=outbound.vapid_public_key,
        check_url=check_url or outbound.check_url, new_secret=outbound.new_secret,
        fcm_configured=outbound.fcm.configured, limits=limits(settings))
    fan_out = FanOut(stores, queue, await DeletedAccounts.open(js))
    sending = Sending(stores, queue, {**outbound.senders, **(senders or {})},
                      send_policy(settings))
    receipts = Receipts(stores, read_receipts or outbound.expo.read_receipts)

    async def erase(user_id: str) -> None:
        await stores.erase_user(user_id)
        await queue.purge_user(user_id)

    return ServiceParts(
        # Only the gateway asks (contracts/permissions.py exports these to its account).
        responders=[Responder(subject,
                              requests.answerer(model, getattr(handlers, use_case), FAILURES),
                              NOTIFIER_QUEUE_GROUP, callers=(account_of(GATEWAY),))
                    for subject, model, use_case in ROUTES],
        max_concurrent_requests=settings.max_concurrent_requests,
        consumers=[Consumer(NOTIFIER_EVENTS, fan_out.handle, FAN_OUT_CONCURRENCY),
                   Consumer(NOTIFIER_SENDS, sending.handle, settings.notify_concurrency),
                   Consumer(NOTIFIER_RECEIPTS, receipts.handle, RECEIPT_CONCURRENCY),
                   Consumer(ACCOUNT_CLEANUP, erasing(erase, settings.erasure_second_pass_s))],
        after_stop=outbound.close)


def _field_of(model: Any, error: ValidationError) -> str | None:
    """The first field at fault, by its name in the request (`events`, `keys.p256dh`):
    not the list position, dict key or union member pydantic adds after it."""
    for found in error.errors():
        names, level = [], model
        for part in found["loc"]:
            fields = getattr(level, "model_fields", None)
            if not isinstance(part, str) or not fields or part not in fields:
                break
            names.append(part)
            level = fields[part].annotation
        if names:
            return ".".join(names)
    return None
