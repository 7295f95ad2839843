"""Each channel's sender against its local stand-in over real HTTP on loopback: what the
remote end receives (decrypted, verified) and what each of its answers comes to."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook as Signer
from standardwebhooks.webhooks import WebhookVerificationError

from contracts.notifications import (
    Device,
    Language,
    Notice,
    NotifyEvent,
    Platform,
    PushProvider,
    SigningSecret,
    Webhook,
    WebhookPayload,
    WebPushKeys,
    WebPushSubscription,
)
from notifier_service.channels.expo import ExpoSender
from notifier_service.channels.fcm import FcmSender
from notifier_service.channels.webhooks import WebhookSender, live_secrets, new_secret
from notifier_service.channels.webpush import MAX_PLAINTEXT, WebPushSender, payload
from notifier_service.config import NotifierSettings
from notifier_service.delivery import OutcomeKind, web_push_topic
from notifier_service.egress import REDIRECT_ERROR, EgressPolicy, egress_session
from notifier_service.texts import render
from notifier_service.vapid import load_vapid, public_key_b64url
from testing.push_standins import (
    ExpoStandIn,
    FcmStandIn,
    Reply,
    WebhookReceiver,
    WebPushClientKeys,
    WebPushReceiver,
    service_account_key,
    verify_vapid,
)

pytestmark = pytest.mark.integration

LOOPBACK_ALLOWED = EgressPolicy(allow_loopback=True, allow_private=False, require_https=False)
PROMPT = "a watercolour fox, secret prompt words"
SUBJECT = "mailto:ops@example.com"


def notice(event: NotifyEvent = NotifyEvent.GENERATION_COMPLETED, **fields) -> Notice:
    defaults = {"event": event.value, "event_id": "evt1", "user_id": "user1",
                "occurred_at": datetime.now(UTC), "job_id": "job1",
                "image_ids": ["img1", "img2"], "deep_link": "/images/img1", "prompt": PROMPT}
    return Notice(**{**defaults, **fields})


def device(token: str, provider: PushProvider, language: Language = Language.EN) -> Device:
    return Device(device_id="dev1", user_id="user1", token=token, platform=Platform.ANDROID,
                  provider=provider, language=language)


def settings(tmp_path, **fields) -> NotifierSettings:
    return NotifierSettings(data_dir=tmp_path, **fields)


@pytest.fixture
async def session():
    client = egress_session(LOOPBACK_ALLOWED, timeout_s=2.0)
    yield client
    await client.close()


# --- Web Push ----------------------------------------------------------------------------


def subscription(endpoint: str, keys: WebPushClientKeys,
                 language: Language = Language.EN) -> WebPushSubscription:
    return WebPushSubscription(subscription_id="sub1", user_id="user1", endpoint=endpoint,
                               keys=WebPushKeys(p256dh=keys.p256dh, auth=keys.auth),
                               language=language)


def test_the_local_vapid_key_is_made_once_private_and_kept(tmp_path):
    first = load_vapid(settings(tmp_path))
    path = settings(tmp_path).vapid_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert public_key_b64url(load_vapid(settings(tmp_path))) == public_key_b64url(first)
    from_env = load_vapid(settings(tmp_path / "elsewhere",
                                   vapid_private_key=path.read_text()))
    assert public_key_b64url(from_env) == public_key_b64url(first)
    assert len(public_key_b64url(first)) == 87  # 65 bytes, unpadded


async def test_web_push_is_encrypted_to_the_browser_and_signed_with_vapid(tmp_path, session):
    vapid = load_vapid(settings(tmp_path))
    browser = WebPushClientKeys.generate()
    sent = notice(NotifyEvent.PROMPT_OPTIMIZED, image_ids=[], deep_link="/jobs/job1")
    async with WebPushReceiver() as push:
        sender = WebPushSender(session, vapid, SUBJECT, ttl_s=3600)
        target = subscription(push.endpoint("b1"), browser, Language.FR)
        outcome = await sender.send(target, sent, "delivery1")
        [request] = push.requests

    assert outcome.kind is OutcomeKind.DELIVERED and outcome.status_code == 201
    assert request.headers["ttl"] == "3600"
    assert request.headers["urgency"] == "normal"
    assert request.headers["topic"] == web_push_topic("job1")
    assert request.headers["content-encoding"] == "aes128gcm"
    body = json.loads(browser.decrypt(request.body))
    text = render(sent, Language.FR)
    assert body == {"title": text.title, "body": text.body, "event": "prompt.optimized",
                    "job_id": "job1", "model_id": None, "image_ids": [],
                    "deep_link": "/jobs/job1", "delivery_id": "delivery1", "prompt": PROMPT}
    claims, key = verify_vapid(request.headers["authorization"])
    assert key == public_key_b64url(vapid)
    assert claims["aud"] == push.url and claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600


async def test_web_push_keeps_the_prompt_out_of_other_events(tmp_path, session):
    browser = WebPushClientKeys.generate()
    async with WebPushReceiver() as push:
        sender = WebPushSender(session, load_vapid(settings(tmp_path)), SUBJECT, ttl_s=60)
        await sender.send(subscription(push.endpoint("b1"), browser),
                          notice(NotifyEvent.GENERATION_FAILED, reason="out of memory"), "d1")
        [request] = push.requests
    body = json.loads(browser.decrypt(request.body))
    assert body["prompt"] is None and body["event"] == "generation.failed"
    assert request.headers["urgency"] == "high"


def test_a_long_prompt_is_cut_to_what_push_services_accept():
    long = notice(NotifyEvent.PROMPT_OPTIMIZED, prompt="renard 🦊 \"é\" " * 300)
    body = payload(long, Language.EN, "d1")
    assert len(body) <= MAX_PLAINTEXT
    assert json.loads(body)["prompt"].startswith("renard 🦊")


async def test_web_push_answers_map_to_outcomes(tmp_path, session):
    browser = WebPushClientKeys.generate()
    async with WebPushReceiver() as push:
        sender = WebPushSender(session, load_vapid(settings(tmp_path)), SUBJECT, ttl_s=60)
        push.always(push.path("gone"), 410)
        push.always(push.path("unknown"), 404)
        push.always(push.path("busy"), Reply(429, retry_after="30"))
        push.always(push.path("bad"), 400)

        async def send(name: str):
            return await sender.send(subscription(push.endpoint(name), browser), notice(), "d")

        assert (await send("gone")).kind is OutcomeKind.GONE
        assert (await send("unknown")).kind is OutcomeKind.GONE
        busy = await send("busy")
        assert busy.kind is OutcomeKind.RETRY and busy.retry_after_s == 30
        assert (await send("bad")).kind is OutcomeKind.REFUSED


# --- Expo --------------------------------------------------------------------------------


def expo_settings(tmp_path, expo: ExpoStandIn) -> NotifierSettings:
    return settings(tmp_path, expo_push_url=expo.send_url,
                    expo_receipts_url=expo.receipts_url, expo_access_token="expo-secret")


async def test_expo_message_names_ids_never_the_prompt(tmp_path, session):
    async with ExpoStandIn(access_token="expo-secret") as expo:
        sender = ExpoSender(session, expo_settings(tmp_path, expo))
        sent = notice()
        outcome = await sender.send(device("ExponentPushToken[a]", PushProvider.EXPO,
                                           Language.FR), sent, "d1")
        [request] = expo.requests

    assert outcome.kind is OutcomeKind.DELIVERED and len(outcome.expo_tickets) == 1
    assert PROMPT.encode() not in request.body
    text = render(sent, Language.FR)
    assert request.json() == [{
        "to": "ExponentPushToken[a]", "title": text.title, "body": text.body,
        "data": {"event": "generation.completed", "job_id": "job1", "model_id": None,
                 "image_ids": ["img1", "img2"], "deep_link": "/images/img1",
                 "delivery_id": "d1"},
        "sound": "default", "priority": "high"}]


async def test_expo_device_not_registered_is_gone_at_once_or_in_its_receipt(tmp_path,
                                                                           session):
    async with ExpoStandIn(access_token="expo-secret") as expo:
        sender = ExpoSender(session, expo_settings(tmp_path, expo))
        expo.fail_ticket("ExponentPushToken[gone]")
        expo.fail_receipt("ExponentPushToken[later]")
        expo.fail_ticket("ExponentPushToken[big]", "MessageTooBig")

        gone = await sender.send(device("ExponentPushToken[gone]", PushProvider.EXPO),
                                 notice(), "d1")
        later = await sender.send(device("ExponentPushToken[later]", PushProvider.EXPO),
                                  notice(), "d2")
        fine = await sender.send(device("ExponentPushToken[fine]", PushProvider.EXPO),
                                 notice(), "d3")
        big = await sender.send(device("ExponentPushToken[big]", PushProvider.EXPO),
                                notice(), "d4")
        receipts = await sender.read_receipts([*later.expo_tickets, *fine.expo_tickets,
                                               "unknown-ticket"])

    assert gone.kind is OutcomeKind.GONE and "DeviceNotRegistered" in gone.error
    assert big.kind is OutcomeKind.REFUSED
    assert later.kind is OutcomeKind.DELIVERED
    assert receipts == {later.expo_tickets[0]: "DeviceNotRegistered",
                        fine.expo_tickets[0]: None}


async def test_expo_overload_is_retried_after_what_it_asks(tmp_path, session):
    async with ExpoStandIn(access_token="expo-secret") as expo:
        expo.script(Reply(503, retry_after="12"))
        sender = ExpoSender(session, expo_settings(tmp_path, expo))
        outcome = await sender.send(device("ExponentPushToken[a]", PushProvider.EXPO),
                                    notice(), "d1")
    assert outcome.kind is OutcomeKind.RETRY and outcome.retry_after_s == 12


# --- FCM ---------------------------------------------------------------------------------


async def test_fcm_sends_with_a_service_account_token_and_drops_unregistered(tmp_path,
                                                                           session):
    async with FcmStandIn(project_id="terra-app") as fcm:
        key, private_key = service_account_key(fcm.token_uri, "terra-app")
        fcm.trust(key, private_key.public_key())
        key_file = tmp_path / "firebase.json"
        key_file.write_text(json.dumps(key))
        sender = FcmSender(session, settings(tmp_path, fcm_service_account_file=key_file,
                                             fcm_url=fcm.url))
        fcm.unregister("token-gone")

        sent = notice()
        delivered = await sender.send(device("token-1", PushProvider.FCM), sent, "d1")
        gone = await sender.send(device("token-gone", PushProvider.FCM), sent, "d2")
        fcm.revoke_access_tokens()
        refused = await sender.send(device("token-1", PushProvider.FCM), sent, "d3")
        again = await sender.send(device("token-1", PushProvider.FCM), sent, "d3")
        first = fcm.requests[0]

    assert delivered.kind is OutcomeKind.DELIVERED
    assert gone.kind is OutcomeKind.GONE and "UNREGISTERED" in gone.error
    assert refused.kind is OutcomeKind.RETRY and refused.status_code == 401
    assert again.kind is OutcomeKind.DELIVERED
    assert fcm.token_requests == 2  # one token reused, a second after the revocation
    assert PROMPT.encode() not in first.body
    text = render(sent, Language.EN)
    assert first.json() == {"message": {
        "token": "token-1", "notification": {"title": text.title, "body": text.body},
        "data": {"event": "generation.completed", "job_id": "job1", "model_id": "",
                 "image_ids": "img1,img2", "deep_link": "/images/img1", "delivery_id": "d1"},
        "android": {"priority": "high"}, "apns": {"headers": {"apns-priority": "10"}}}}


async def test_fcm_without_a_trusted_key_gets_no_token_and_retries(tmp_path, session):
    async with FcmStandIn() as fcm:
        untrusted, _ = service_account_key(fcm.token_uri)
        key_file = tmp_path / "untrusted.json"
        key_file.write_text(json.dumps(untrusted))
        sender = FcmSender(session, settings(tmp_path, fcm_service_account_file=key_file,
                                             fcm_url=fcm.url))
        outcome = await sender.send(device("token-1", PushProvider.FCM), notice(), "d1")
        assert fcm.requests == []
    assert outcome.kind is OutcomeKind.RETRY and "access token" in outcome.error


async def test_fcm_unconfigured_refuses(tmp_path, session):
    sender = FcmSender(session, settings(tmp_path))
    outcome = await sender.send(device("token-1", PushProvider.FCM), notice(), "d1")
    assert outcome.kind is OutcomeKind.REFUSED


# --- webhooks ----------------------------------------------------------------------------


def webhook(url: str, *secrets: SigningSecret) -> Webhook:
    return Webhook(webhook_id="hook1", user_id="user1", url=url,
                   secrets=list(secrets) or [SigningSecret(secret=new_secret(),
                                                           created_at=datetime.now(UTC))])


async def test_webhook_signatures_verify_with_both_secrets_while_rotating(session):
    now = datetime.now(UTC)
    new = SigningSecret(secret=new_secret(), created_at=now)
    old = SigningSecret(secret=new_secret(), created_at=now - timedelta(days=30),
                        expires_at=now + timedelta(hours=1))
    expired = SigningSecret(secret=new_secret(), created_at=now - timedelta(days=60),
                            expires_at=now - timedelta(seconds=1))
    target = webhook("", old, expired, new)
    assert live_secrets(target, now) == [new, old]
    sent = notice(NotifyEvent.TRAINING_COMPLETED, model_id="model1", image_ids=[],
                  deep_link="/models/model1", prompt=None)
    async with WebhookReceiver() as hooks:
        target = target.model_copy(update={"url": hooks.hook_url("h1")})
        outcome = await WebhookSender(session).send(target, sent, "delivery1")
        [request] = hooks.requests

    assert outcome.kind is OutcomeKind.DELIVERED and outcome.status_code == 200
    assert request.headers["webhook-id"] == "delivery1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Terra-Webhooks/1"
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Signer(secret.secret).verify(request.body, request.headers)["type"] == (
            "training.completed")
    with pytest.raises(WebhookVerificationError):
        Signer(expired.secret).verify(request.body, request.headers)
    payload = WebhookPayload.model_validate_json(request.body)
    assert payload.data.model_id == "model1" and payload.data.deep_link == "/models/model1"
    assert payload.timestamp == sent.occurred_at


async def test_webhook_answers_map_to_outcomes(session):
    async with WebhookReceiver() as hooks:
        sender = WebhookSender(session)
        hooks.script(hooks.path("flaky"), 500, Reply(503, retry_after="7"), 204)
        hooks.always(hooks.path("gone"), 410)
        hooks.always(hooks.path("moved"), Reply(307, location=hooks.hook_url("elsewhere")))

        async def send(name: str):
            return await sender.send(webhook(hooks.hook_url(name)), notice(), "d1")

        first, second, third = [await send("flaky") for _ in range(3)]
        gone = await send("gone")
        moved = await send("moved")
        followed = hooks.received(hooks.path("elsewhere"))

    assert first.kind is OutcomeKind.RETRY and first.retry_after_s is None
    assert second.kind is OutcomeKind.RETRY and second.retry_after_s == 7
    assert third.kind is OutcomeKind.DELIVERED and third.status_code == 204
    assert gone.kind is OutcomeKind.GONE
    assert moved.kind is OutcomeKind.RETRY and moved.error == REDIRECT_ERROR
    assert followed == []


async def test_a_hanging_webhook_times_out_as_a_retry():
    client = egress_session(LOOPBACK_ALLOWED, timeout_s=0.3)
    try:
        async with WebhookReceiver(default=Reply(200, delay_s=2)) as hooks:
            started = time.monotonic()
            outcome = await WebhookSender(client).send(webhook(hooks.hook_url("slow")),
                                                       notice(), "d1")
            elapsed = time.monotonic() - started
    finally:
        await client.close()
    assert outcome.kind is OutcomeKind.RETRY and outcome.error == "timed out"
    assert elapsed < 1.5


# --- egress ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_a_policy_without_loopback_refuses_it_as_literal_and_by_name(host):
    client = egress_session(EgressPolicy(allow_loopback=False, require_https=False),
                            timeout_s=2.0)
    try:
        async with WebhookReceiver() as hooks:
            port = hooks.url.rsplit(":", 1)[1]
            url = f"http://{host}:{port}{hooks.path('h')}"
            outcome = await WebhookSender(client).send(webhook(url), notice(), "d1")
            assert hooks.requests == []
    finally:
        await client.close()
    assert outcome.kind is OutcomeKind.RETRY and outcome.status_code is None
    assert "loopback" in outcome.error
