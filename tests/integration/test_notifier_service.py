"""notifier_service over real NATS: the app runs in-process, requests come as the gateway
sends them, events are published on the events stream, and the targets are local
stand-ins reached over real HTTP (webhook receiver, Web Push service, Expo)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import nats.errors
import pytest
from pydantic import TypeAdapter
from standardwebhooks.webhooks import Webhook as Verifier

from contracts.auth import AccountDeleted
from contracts.base import Message
from contracts.generation import GeneratedImage, ImageGenerated
from contracts.notifications import (
    AddDevice,
    AddWebPush,
    Channel,
    CreateWebhook,
    DeleteWebhook,
    DeliveryList,
    DeliveryQueued,
    DeliveryState,
    DeviceAdded,
    GetWebhook,
    GetWebPushKey,
    ListDeliveries,
    ListTargets,
    ListWebhooks,
    NotifierDone,
    NotifierErrorCode,
    NotifierFailure,
    NotifyEvent,
    Platform,
    PreferencesReply,
    PushProvider,
    RedeliverWebhook,
    RemoveDevice,
    RotateWebhookSecret,
    SetPreferences,
    Targets,
    TestWebhook,
    UpdateWebhook,
    WebhookList,
    WebhookReply,
    WebPushAdded,
    WebPushKey,
)
from contracts.permissions import OPERATOR
from contracts.prompt import PromptOptimized, TokenCounts
from contracts.topology import (
    DELIVERIES_KV,
    DEVICES_KV,
    GATEWAY,
    NOTIFIER,
    NOTIFIER_DELIVERIES,
    NOTIFIER_EVENTS,
    PREFERENCES_KV,
    PROMPT,
    WEB_PUSH_KV,
    WEBHOOKS_KV,
    NotifierRpc,
    notifier_work_of,
)
from notifier_service.bootstrap import ROUTES
from notifier_service.config import NotifierSettings
from notifier_service.main import build_app
from notifier_service.stores import AddressOwners
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.nats.connection import jetstream
from terra.nats.events import EventPublisher
from terra.nats.listings import live_entries
from testing.push_standins import (
    ExpoStandIn,
    Reply,
    WebhookReceiver,
    WebPushClientKeys,
    WebPushReceiver,
    verify_vapid,
)
from tests.conftest import provision_all
from tests.infra import nats_server

pytestmark = pytest.mark.integration

RETRIES = (0.2, 0.2, 0.2)  # four attempts in well under a second
MAX_WEBHOOKS = 3
MAX_DEVICES = 2
PER_TARGET = 2  # sends in flight at once to one target


@pytest.fixture(scope="module")
def nats_endpoint(tmp_path_factory):
    """A server of this module's own: the notifier's durable consumers start empty, and
    no other suite's events or replicas meet this one's."""
    with nats_server(tmp_path_factory.mktemp("notifier-nats")) as endpoint:
        asyncio.run(provision_all(endpoint))
        yield endpoint


@pytest.fixture(scope="module")
async def hooks():
    async with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
async def push_service():
    async with WebPushReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
async def expo():
    async with ExpoStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def settings(nats_endpoint, expo, tmp_path_factory) -> NotifierSettings:
    return NotifierSettings(
        nats_url=nats_endpoint.url, nats_credentials_dir=nats_endpoint.credentials.directory,
        data_dir=tmp_path_factory.mktemp("notifier-data"),
        notify_retry_schedule_s=RETRIES, notify_busy_wait_s=0.1, notify_timeout_s=5.0,
        notify_max_webhooks=MAX_WEBHOOKS, notify_max_devices=MAX_DEVICES,
        notify_per_target_concurrency=PER_TARGET,
        notify_secret_overlap_s=3600, fetch_timeout_s=0.5, shutdown_grace_s=0.2,
        expo_push_url=expo.send_url, expo_receipts_url=expo.receipts_url,
        expo_receipt_delay_s=0.3)


@pytest.fixture(scope="module")
async def notifier(settings):
    app = build_app(settings, configure_process=False)
    async with app:
        yield app


@pytest.fixture
async def gw(nats_endpoint):
    """The gateway's connection: the notifier answers the gateway's account only."""
    connection = await nats_endpoint.connect(GATEWAY)
    yield connection
    await connection.drain()


@pytest.fixture
async def events(nc):
    """Publishes events as the operator does (the services that own them are not here)."""
    return EventPublisher(jetstream(nc, OPERATOR))


async def call(gw, subject: NotifierRpc, request: Message, reply_type=None):
    msg = await gw.request(subject, request.model_dump_json().encode(), timeout=10)
    reply = json.loads(msg.data)
    if reply["type"] == "notify.failure.v1":
        return NotifierFailure.model_validate(reply)
    return TypeAdapter(reply_type).validate_python(reply) if reply_type else reply


def fresh_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def eventually(check: Callable[[], Awaitable | object], timeout: float = 10.0,
                     every: float = 0.05):
    """`check()`'s first truthy value (awaited when it is a coroutine function), or the
    test fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s")
        await asyncio.sleep(every)


async def create_webhook(gw, hooks, user: str, name: str | None = None,
                         **fields) -> tuple[WebhookReply, str]:
    path = WebhookReceiver.path(name or uuid.uuid4().hex[:12])
    reply = await call(gw, NotifierRpc.CREATE_WEBHOOK,
                       CreateWebhook(user_id=user, url=hooks.url + path, **fields),
                       WebhookReply)
    assert isinstance(reply, WebhookReply), reply
    return reply, path


def image_generated(user: str) -> ImageGenerated:
    return ImageGenerated(user_id=user, job_id=uuid.uuid4().hex, images=[GeneratedImage(
        image_id=uuid.uuid4().hex, key="images/x.png", width=64, height=64, seed=1)])


def prompt_optimized(user: str) -> PromptOptimized:
    return PromptOptimized(user_id=user, job_id=uuid.uuid4().hex, original="a cat",
                           optimized="a photo of a cat", tokens=TokenCounts(clip=5, t5=6),
                           engine="offline")


async def events_settled(nc) -> bool:
    """Every event so far taken and acked by the notifier's events consumer."""
    js = jetstream(nc, OPERATOR)
    info = await js.consumer_info(NOTIFIER_EVENTS.stream, NOTIFIER_EVENTS.durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


# --- restarts (first: these run their own notifiers, before the module's starts) ---------


async def test_a_notifier_stopped_mid_send_and_between_retries_delivers_under_one_id(
        settings, gw, hooks, events, nc):
    user = fresh_user()
    slow_then_failing = settings.model_copy(update={"notify_retry_schedule_s": (1.0,)})
    async with build_app(slow_then_failing, configure_process=False):
        created, path = await create_webhook(gw, hooks, user)
        hooks.script(path, Reply(200, delay_s=2.0), 500)
        await events.publish(image_generated(user))
        await hooks.wait_for(1, path=path)  # stopped with this send in hand
    async with build_app(slow_then_failing, configure_process=False):
        # Sent again at once (the stopped one handed it back), answered 500: the retry
        # waits on the server, and another restart in between does not lose it.
        await hooks.wait_for(2, path=path)

        async def retry_scheduled():
            reply = await call(gw, NotifierRpc.LIST_DELIVERIES, ListDeliveries(
                user_id=user, webhook_id=created.webhook.id), DeliveryList)
            return reply.deliveries and reply.deliveries[0].next_attempt_at is not None

        await eventually(retry_scheduled)
    async with build_app(slow_then_failing, configure_process=False):
        requests = await hooks.wait_for(3, path=path)
        assert len({r.headers["webhook-id"] for r in requests}) == 1

        async def delivered():
            reply = await call(gw, NotifierRpc.LIST_DELIVERIES, ListDeliveries(
                user_id=user, webhook_id=created.webhook.id), DeliveryList)
            return reply.deliveries[0].state is DeliveryState.DELIVERED

        await eventually(delivered)
    assert len(hooks.received(path)) == 3


# --- webhooks --------------------------------------------------------------------------


async def test_a_webhook_gets_one_signed_request_per_event_and_its_secret_once(
        notifier, gw, hooks, events):
    user = fresh_user()
    created, path = await create_webhook(gw, hooks, user)
    secret = created.secret
    assert secret and secret.startswith("whsec_")
    got = await call(gw, NotifierRpc.GET_WEBHOOK,
                     GetWebhook(user_id=user, webhook_id=created.webhook.id))
    listed = await call(gw, NotifierRpc.LIST_WEBHOOKS, ListWebhooks(user_id=user))
    assert got["secret"] is None and secret not in json.dumps(got)
    assert [w["id"] for w in listed["webhooks"]] == [created.webhook.id]
    assert secret not in json.dumps(listed)

    event = image_generated(user)
    await events.publish(event)
    [request] = await hooks.wait_for(1, path=path)
    body = Verifier(secret).verify(request.body, request.headers)
    assert body["type"] == NotifyEvent.GENERATION_COMPLETED
    assert body["data"]["job_id"] == event.job_id
    assert body["data"]["image_ids"] == [event.images[0].image_id]
    assert body["data"]["deep_link"] == f"/images/{event.images[0].image_id}"
    await asyncio.sleep(0.5)
    assert len(hooks.received(path)) == 1


async def test_failures_are_retried_under_the_same_id_until_one_success(
        notifier, gw, hooks, events):
    user = fresh_user()
    created, path = await create_webhook(gw, hooks, user)
    hooks.script(path, 500, Reply(503, retry_after="0"))
    await events.publish(image_generated(user))
    requests = await hooks.wait_for(3, path=path)
    ids = {r.headers["webhook-id"] for r in requests}
    assert len(ids) == 1
    for request in requests:  # each attempt signed afresh
        Verifier(created.secret).verify(request.body, request.headers)

    async def delivered():
        reply = await call(gw, NotifierRpc.LIST_DELIVERIES, ListDeliveries(
            user_id=user, webhook_id=created.webhook.id), DeliveryList)
        return reply if reply.deliveries[0].state is DeliveryState.DELIVERED else None

    [delivery] = (await eventually(delivered)).deliveries
    assert delivery.id == ids.pop()
    assert [a.status_code for a in delivery.attempts] == [500, 503, 200]
    await asyncio.sleep(0.6)
    assert len(hooks.received(path)) == 3

    # Redelivered on request: the same id, once more.
    queued = await call(gw, NotifierRpc.REDELIVER_WEBHOOK, RedeliverWebhook(
        user_id=user, webhook_id=created.webhook.id, delivery_id=delivery.id),
        DeliveryQueued)
    assert queued.delivery_id == delivery.id
    fourth = (await hooks.wait_for(4, path=path))[3]
    assert fourth.headers["webhook-id"] == delivery.id


async def test_a_webhook_failing_every_attempt_is_disabled_and_says_why(
        notifier, gw, hooks, events, nc):
    user = fresh_user()
    created, path = await create_webhook(gw, hooks, user)
    hooks.always(path, 500)
    await events.publish(image_generated(user))

    async def disabled():
        reply = await call(gw, NotifierRpc.GET_WEBHOOK,
                           GetWebhook(user_id=user, webhook_id=created.webhook.id),
                           WebhookReply)
        return reply.webhook if not reply.webhook.enabled else None

    webhook = await eventually(disabled)
    attempts = len(RETRIES) + 1
    assert webhook.disabled_reason == f"{attempts} attempts failed; last: HTTP 500"
    assert len(hooks.received(path)) == attempts
    # Disabled: the next event sends nothing; enabled again, it does.
    await events.publish(image_generated(user))
    await eventually(lambda: events_settled(nc))
    hooks.always(path, 200)
    enabled = await call(gw, NotifierRpc.UPDATE_WEBHOOK, UpdateWebhook(
        user_id=user, webhook_id=created.webhook.id, enabled=True), WebhookReply)
    assert enabled.webhook.enabled and enabled.webhook.disabled_reason is None
    assert len(hooks.received(path)) == attempts
    await events.publish(image_generated(user))
    await hooks.wait_for(attempts + 1, path=path)


async def test_a_webhook_answering_410_is_removed(notifier, gw, hooks, events):
    user = fresh_user()
    created, path = await create_webhook(gw, hooks, user)
    hooks.script(path, 410)
    await events.publish(image_generated(user))
    await hooks.wait_for(1, path=path)

    async def gone():
        reply = await call(gw, NotifierRpc.GET_WEBHOOK,
                           GetWebhook(user_id=user, webhook_id=created.webhook.id))
        return isinstance(reply, NotifierFailure) and reply.code is NotifierErrorCode.NOT_FOUND

    await eventually(gone)


async def test_an_event_published_twice_or_redelivered_is_delivered_once(
        notifier, gw, hooks, events, nc):
    user = fresh_user()
    _, path = await create_webhook(gw, hooks, user)
    event = image_generated(user)
    await events.publish(event)
    await events.publish(event)  # the same message id: the stream keeps one
    # The same event again past the stream's dedup (a redelivery, a replay).
    await jetstream(nc, OPERATOR).publish(event.subject(), event.model_dump_json().encode(),
                                          headers={"Nats-Msg-Id": uuid.uuid4().hex})
    await hooks.wait_for(1, path=path)
    await eventually(lambda: events_settled(nc))
    await asyncio.sleep(0.5)
    assert len(hooks.received(path)) == 1


async def test_a_slow_target_holds_its_own_slots_and_delays_no_one_else(
        notifier, gw, hooks, events):
    slow_user, other_user = fresh_user(), fresh_user()
    _, slow = await create_webhook(gw, hooks, slow_user)
    _, fast = await create_webhook(gw, hooks, other_user)
    hooks.always(slow, Reply(200, delay_s=1.0))
    for _ in range(PER_TARGET + 2):
        await events.publish(image_generated(slow_user))
    await hooks.wait_for(PER_TARGET, path=slow)
    started = time.monotonic()
    await events.publish(image_generated(other_user))
    await hooks.wait_for(1, path=fast)
    assert time.monotonic() - started < 0.8  # not behind the slow target's queue
    arrivals = [r.received_at for r in await hooks.wait_for(PER_TARGET + 2, path=slow)]
    first = arrivals[0]
    assert sum(1 for at in arrivals if at - first < 0.9) == PER_TARGET
    assert len({r.headers["webhook-id"] for r in hooks.received(slow)}) == PER_TARGET + 2


async def test_rotation_signs_with_both_secrets_and_a_test_event_goes_out(
        notifier, gw, hooks):
    user = fresh_user()
    created, path = await create_webhook(gw, hooks, user)
    rotated = await call(gw, NotifierRpc.ROTATE_WEBHOOK_SECRET, RotateWebhookSecret(
        user_id=user, webhook_id=created.webhook.id), WebhookReply)
    assert rotated.secret and rotated.secret != created.secret
    assert rotated.webhook.previous_secret_expires_at is not None
    queued = await call(gw, NotifierRpc.TEST_WEBHOOK, TestWebhook(
        user_id=user, webhook_id=created.webhook.id), DeliveryQueued)
    [request] = await hooks.wait_for(1, path=path)
    assert request.headers["webhook-id"] == queued.delivery_id
    for secret in (created.secret, rotated.secret):
        assert Verifier(secret).verify(request.body, request.headers)["type"] == "webhook.test"


async def test_another_users_webhook_is_not_found(notifier, gw, hooks):
    owner, other = fresh_user(), fresh_user()
    created, _ = await create_webhook(gw, hooks, owner)
    webhook_id = created.webhook.id
    for subject, request in [
        (NotifierRpc.GET_WEBHOOK, GetWebhook(user_id=other, webhook_id=webhook_id)),
        (NotifierRpc.UPDATE_WEBHOOK, UpdateWebhook(user_id=other, webhook_id=webhook_id,
                                                   enabled=False)),
        (NotifierRpc.ROTATE_WEBHOOK_SECRET, RotateWebhookSecret(user_id=other,
                                                                webhook_id=webhook_id)),
        (NotifierRpc.TEST_WEBHOOK, TestWebhook(user_id=other, webhook_id=webhook_id)),
        (NotifierRpc.LIST_DELIVERIES, ListDeliveries(user_id=other, webhook_id=webhook_id)),
        (NotifierRpc.REDELIVER_WEBHOOK, RedeliverWebhook(
            user_id=other, webhook_id=webhook_id, delivery_id="d1")),
        (NotifierRpc.DELETE_WEBHOOK, DeleteWebhook(user_id=other, webhook_id=webhook_id)),
    ]:
        reply = await call(gw, subject, request)
        assert isinstance(reply, NotifierFailure), (subject, reply)
        assert reply.code is NotifierErrorCode.NOT_FOUND, (subject, reply)
    still = await call(gw, NotifierRpc.GET_WEBHOOK,
                       GetWebhook(user_id=owner, webhook_id=webhook_id), WebhookReply)
    assert still.webhook.enabled


async def test_caps_and_bad_input_are_refused_naming_the_field(notifier, gw, hooks):
    user = fresh_user()
    for _ in range(MAX_WEBHOOKS):
        await create_webhook(gw, hooks, user)
    over = await call(gw, NotifierRpc.CREATE_WEBHOOK,
                      CreateWebhook(user_id=user, url=hooks.url + "/hooks/one-more"))
    assert (over.code, over.field) == (NotifierErrorCode.LIMIT_REACHED, "url")

    tokens = [f"ExponentPushToken[{uuid.uuid4().hex}]" for _ in range(MAX_DEVICES + 1)]
    for token in tokens[:MAX_DEVICES]:
        added = await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
            user_id=user, token=token, platform=Platform.IOS, provider=PushProvider.EXPO),
            DeviceAdded)
        assert added.created and added.device.token_hint == token[-6:]
    again = await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
        user_id=user, token=tokens[0], platform=Platform.ANDROID,
        provider=PushProvider.EXPO), DeviceAdded)
    assert not again.created and again.device.platform is Platform.ANDROID
    over = await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
        user_id=user, token=tokens[-1], platform=Platform.IOS, provider=PushProvider.EXPO))
    assert (over.code, over.field) == (NotifierErrorCode.LIMIT_REACHED, "token")

    fcm = await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
        user_id=fresh_user(), token="fcm-token", platform=Platform.ANDROID,
        provider=PushProvider.FCM))
    assert (fcm.code, fcm.field) == (NotifierErrorCode.INVALID_REQUEST, "provider")
    raw = {"user_id": fresh_user(), "url": hooks.url + "/hooks/x", "events": ["nope"],
           "type": "notify.create_webhook.v1"}
    bad = await gw.request(NotifierRpc.CREATE_WEBHOOK, json.dumps(raw).encode(), timeout=10)
    bad = NotifierFailure.model_validate_json(bad.data)
    assert (bad.code, bad.field) == (NotifierErrorCode.INVALID_REQUEST, "events")
    not_url = await call(gw, NotifierRpc.CREATE_WEBHOOK,
                         CreateWebhook(user_id=fresh_user(), url="ftp://example.com/x"))
    assert (not_url.code, not_url.field) == (NotifierErrorCode.INVALID_REQUEST, "url")
    private = await call(gw, NotifierRpc.CREATE_WEBHOOK,
                         CreateWebhook(user_id=fresh_user(), url="http://169.254.169.254/"))
    assert (private.code, private.field) == (NotifierErrorCode.INVALID_REQUEST, "url")


async def test_prompt_optimisations_notify_only_once_turned_on(notifier, gw, hooks, events,
                                                               nc):
    user = fresh_user()
    _, path = await create_webhook(gw, hooks, user)
    await events.publish(prompt_optimized(user))
    await eventually(lambda: events_settled(nc))
    assert hooks.received(path) == []

    chosen = await call(gw, NotifierRpc.SET_PREFERENCES, SetPreferences(
        user_id=user, events={NotifyEvent.PROMPT_OPTIMIZED: [Channel.WEBHOOK]}),
        PreferencesReply)
    assert chosen.preferences.events[NotifyEvent.PROMPT_OPTIMIZED] == [Channel.WEBHOOK]
    assert chosen.preferences.events[NotifyEvent.TRAINING_COMPLETED] == list(Channel)
    event = prompt_optimized(user)
    await events.publish(event)
    [request] = await hooks.wait_for(1, path=path)
    body = request.json()
    assert (body["type"], body["data"]["job_id"]) == ("prompt.optimized", event.job_id)
    assert body["data"]["prompt"] == "a photo of a cat"


# --- push -------------------------------------------------------------------------------


async def test_web_push_is_encrypted_signed_and_a_410_removes_it(
        notifier, gw, push_service, events):
    user = fresh_user()
    key = await call(gw, NotifierRpc.WEBPUSH_KEY, GetWebPushKey(), WebPushKey)
    browser = WebPushClientKeys.generate()
    endpoint = push_service.endpoint(uuid.uuid4().hex[:12])
    added = await call(gw, NotifierRpc.ADD_WEBPUSH, AddWebPush(
        user_id=user, **browser.subscription(endpoint)), WebPushAdded)
    assert added.created
    event = image_generated(user)
    await events.publish(event)
    [request] = await push_service.wait_for(1, path=endpoint.removeprefix(push_service.url))
    message = json.loads(browser.decrypt(request.body))
    assert (message["event"], message["job_id"]) == ("generation.completed", event.job_id)
    _, signing_key = verify_vapid(request.headers["authorization"])
    assert signing_key == key.public_key
    assert int(request.headers["ttl"]) > 0

    push_service.script(endpoint.removeprefix(push_service.url), 410)
    await events.publish(image_generated(user))

    async def removed():
        targets = await call(gw, NotifierRpc.LIST_TARGETS, ListTargets(user_id=user), Targets)
        return targets.web_push == []

    await eventually(removed)


async def test_an_expo_device_no_longer_registered_is_removed(notifier, gw, expo, events):
    user = fresh_user()
    token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    added = await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
        user_id=user, token=token, platform=Platform.IOS, provider=PushProvider.EXPO),
        DeviceAdded)
    expo.fail_receipt(token)
    event = image_generated(user)
    await events.publish(event)
    await eventually(lambda: [m for m in expo.messages if m["to"] == token])
    [message] = [m for m in expo.messages if m["to"] == token]
    assert event.job_id in json.dumps(message["data"])

    async def removed():
        targets = await call(gw, NotifierRpc.LIST_TARGETS, ListTargets(user_id=user), Targets)
        return targets.devices == []

    await eventually(removed)
    gone = await call(gw, NotifierRpc.REMOVE_DEVICE,
                      RemoveDevice(user_id=user, device_id=added.device.id))
    assert gone.code is NotifierErrorCode.NOT_FOUND


async def test_a_phone_or_browser_signed_into_another_account_leaves_the_first(
        notifier, gw, expo, push_service, events):
    """Ann signs out on a shared phone and browser; Bob signs in and registers them: from
    then on Ann's endings reach neither, Bob's do."""
    ann, bob = fresh_user(), fresh_user()
    token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    keys = WebPushClientKeys.generate()
    endpoint = push_service.endpoint(uuid.uuid4().hex[:12])
    for user in (ann, bob):
        device = await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
            user_id=user, token=token, platform=Platform.ANDROID, provider=PushProvider.EXPO),
            DeviceAdded)
        assert device.created
        browser = await call(gw, NotifierRpc.ADD_WEBPUSH, AddWebPush(
            user_id=user, endpoint=endpoint, keys=keys.subscription(endpoint)["keys"]),
            WebPushAdded)
        assert browser.created
    left = await call(gw, NotifierRpc.LIST_TARGETS, ListTargets(user_id=ann), Targets)
    assert left.devices == [] and left.web_push == []

    await events.publish(image_generated(ann))
    bobs = image_generated(bob)
    await events.publish(bobs)
    await eventually(lambda: [m for m in expo.messages if m["to"] == token])
    path = endpoint.removeprefix(push_service.url)
    await push_service.wait_for(1, path=path)
    await asyncio.sleep(0.5)
    # Only Bob's: one message each, and it is his job.
    [message] = [m for m in expo.messages if m["to"] == token]
    assert message["data"]["job_id"] == bobs.job_id
    [push] = push_service.received(path)
    assert json.loads(keys.decrypt(push.body))["job_id"] == bobs.job_id


# --- accounts and callers -------------------------------------------------------------


async def test_account_deletion_erases_everything_and_pending_work(
        notifier, gw, hooks, events, nc):
    user = fresh_user()
    _, path = await create_webhook(gw, hooks, user)
    hooks.always(path, Reply(503, retry_after="60"))  # its delivery waits a minute
    token = f"ExponentPushToken[{uuid.uuid4().hex}]"
    await call(gw, NotifierRpc.ADD_DEVICE, AddDevice(
        user_id=user, token=token, platform=Platform.IOS,
        provider=PushProvider.EXPO), DeviceAdded)
    await call(gw, NotifierRpc.SET_PREFERENCES, SetPreferences(
        user_id=user, events={NotifyEvent.PROMPT_OPTIMIZED: [Channel.WEBHOOK]}),
        PreferencesReply)
    await events.publish(image_generated(user))
    await hooks.wait_for(1, path=path)
    js = jetstream(nc, OPERATOR)

    async def pending_work() -> int:
        info = await js.stream_info(NOTIFIER_DELIVERIES.name,
                                    subjects_filter=notifier_work_of(user))
        return sum((info.state.subjects or {}).values())

    await eventually(pending_work)  # the webhook's delivery, waiting for its retry
    devices = await js.key_value(DEVICES_KV.bucket)
    assert await live_entries(devices, AddressOwners.key(token))  # the phone names its owner
    await events.publish(AccountDeleted(user_id=user))

    async def erased() -> bool:
        for spec in (WEB_PUSH_KV, DEVICES_KV, WEBHOOKS_KV, DELIVERIES_KV):
            if await live_entries(await js.key_value(spec.bucket), f"{user}.>"):
                return False
        preferences = await live_entries(await js.key_value(PREFERENCES_KV.bucket), user)
        # Nor does the phone's token still name it as its owner.
        owner = await live_entries(await js.key_value(DEVICES_KV.bucket),
                                   AddressOwners.key(token))
        return not preferences and not owner and await pending_work() == 0

    await eventually(erased)
    listed = await call(gw, NotifierRpc.LIST_WEBHOOKS, ListWebhooks(user_id=user), WebhookList)
    assert listed.webhooks == []


async def test_a_deleted_accounts_event_notifies_nobody(notifier, gw, hooks, events, nc):
    user = fresh_user()
    _, path = await create_webhook(gw, hooks, user)
    deleted = DeletedAccounts(await jetstream(nc, OPERATOR).key_value("terra_deleted_accounts"))
    await deleted.mark(user, AccountDeleted(user_id=user).occurred_at)
    await events.publish(image_generated(user))
    await eventually(lambda: events_settled(nc))
    await asyncio.sleep(0.3)
    assert hooks.received(path) == []


async def test_only_the_gateway_is_answered(notifier, nats_endpoint, nc):
    assert {subject for subject, _, _ in ROUTES} == set(NotifierRpc)
    request = ListWebhooks(user_id=fresh_user()).model_dump_json().encode()
    for identity in (PROMPT, NOTIFIER):
        connection = await nats_endpoint.connect(identity)
        try:
            with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                await connection.request(NotifierRpc.LIST_WEBHOOKS, request, timeout=1)
        finally:
            await connection.close()
    with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
        await nc.request(NotifierRpc.LIST_WEBHOOKS, request, timeout=1)


async def test_removing_a_device_and_deleting_a_webhook(notifier, gw, hooks):
    user = fresh_user()
    created, _ = await create_webhook(gw, hooks, user)
    done = await call(gw, NotifierRpc.DELETE_WEBHOOK,
                      DeleteWebhook(user_id=user, webhook_id=created.webhook.id), NotifierDone)
    assert isinstance(done, NotifierDone)
    again = await call(gw, NotifierRpc.DELETE_WEBHOOK,
                       DeleteWebhook(user_id=user, webhook_id=created.webhook.id))
    assert again.code is NotifierErrorCode.NOT_FOUND
