"""notifier_service's pure rules: caps, registrations, views without secrets, secret
rotation, what an attempt does to a delivery record, and the event subjects it reads."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest

from contracts.notifications import (
    Channel,
    DeliveryRecord,
    DeliveryState,
    Device,
    Notice,
    NotifierErrorCode,
    NotifyEvent,
    Platform,
    Preferences,
    PushProvider,
    Webhook,
    WebPushKeys,
    WebPushSubscription,
)
from notifier_service import domain
from notifier_service.delivery import Outcome, OutcomeKind
from notifier_service.domain import NotifierError
from notifier_service.fanout import event_of_subject
from notifier_service.sending import TargetSlots
from terra.runtime.worker import PermanentFailure

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
USER = "user-1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


KEYS = WebPushKeys(p256dh=b64(b"\x04" + bytes(64)), auth=b64(bytes(16)))


def webhook(**fields) -> Webhook:
    fields.setdefault("secrets", domain.first_secret("whsec_first", NOW))
    return Webhook(webhook_id="hook-1", user_id=USER, url="https://example.com/hook",
                   created_at=NOW, **fields)


def record(**fields) -> DeliveryRecord:
    notice = Notice(event="generation.completed", event_id="evt-1", user_id=USER,
                    occurred_at=NOW, deep_link="/images/img-1")
    return DeliveryRecord(delivery_id="d-1", user_id=USER, target_id="hook-1",
                          channel=Channel.WEBHOOK, notice=notice, created_at=NOW, **fields)


# --- caps and registrations ----------------------------------------------------------------


def test_a_user_at_the_cap_is_refused_naming_the_field():
    domain.check_room(9, 10, "url", "webhooks")
    with pytest.raises(NotifierError) as refused:
        domain.check_room(10, 10, "url", "webhooks")
    assert refused.value.code is NotifierErrorCode.LIMIT_REACHED
    assert refused.value.field == "url"
    assert "10 webhooks" in refused.value.detail


def test_web_push_keys_must_be_a_p256_point_and_a_16_byte_secret():
    domain.check_web_push_keys(KEYS)
    compressed = WebPushKeys(p256dh=b64(b"\x02" + bytes(64)), auth=KEYS.auth)
    with pytest.raises(NotifierError) as refused:
        domain.check_web_push_keys(compressed)
    assert refused.value.field == "keys.p256dh"
    short_auth = WebPushKeys(p256dh=KEYS.p256dh, auth=b64(bytes(20)))
    with pytest.raises(NotifierError) as refused:
        domain.check_web_push_keys(short_auth)
    assert refused.value.field == "keys.auth"


@pytest.mark.parametrize("token", ["ExponentPushToken[abc123]", "ExpoPushToken[x-y_z]"])
def test_expo_tokens_are_accepted(token):
    domain.check_device_token(token, PushProvider.EXPO)


@pytest.mark.parametrize("token", ["abc", "ExponentPushToken[]", "ExponentPushToken[a] b"])
def test_a_token_that_is_no_expo_token_is_refused(token):
    with pytest.raises(NotifierError) as refused:
        domain.check_device_token(token, PushProvider.EXPO)
    assert (refused.value.code, refused.value.field) == (NotifierErrorCode.INVALID_REQUEST,
                                                         "token")


def test_fcm_tokens_are_opaque_but_hold_no_whitespace():
    domain.check_device_token("fcm:APA91b-abc_DEF", PushProvider.FCM)
    with pytest.raises(NotifierError):
        domain.check_device_token("two words", PushProvider.FCM)


# --- views -----------------------------------------------------------------------------


def test_views_hold_no_secret_and_no_whole_token():
    view = domain.webhook_view(webhook(), NOW)
    assert "whsec_" not in view.model_dump_json()
    assert view.enabled and view.secret_rotated_at is None
    device = Device(device_id="dev-1", user_id=USER, token="ExponentPushToken[abcdef123456]",
                    platform=Platform.IOS, provider=PushProvider.EXPO)
    hint = domain.device_view(device)
    assert hint.token_hint == "23456]"
    assert "abcdef" not in hint.model_dump_json()


def test_a_web_push_view_shows_the_push_service_origin_only():
    subscription = WebPushSubscription(
        subscription_id="s-1", user_id=USER,
        endpoint="https://fcm.googleapis.com/fcm/send/secret-part", keys=KEYS)
    view = domain.web_push_view(subscription)
    assert view.endpoint_origin == "https://fcm.googleapis.com"
    assert "secret-part" not in view.model_dump_json()


def test_a_disabled_target_says_why_and_enabling_clears_it():
    off = domain.disabled(webhook(), "6 attempts failed; last: HTTP 500", NOW)
    view = domain.webhook_view(off, NOW)
    assert (view.enabled, view.disabled_reason) == (False, "6 attempts failed; last: HTTP 500")
    on = domain.enabled_again(off)
    assert on.disabled_at is None and on.disabled_reason is None


def test_preferences_view_shows_every_event_with_defaults():
    view = domain.preferences_view(Preferences(user_id=USER))
    assert set(view.events) == set(NotifyEvent)
    assert view.events[NotifyEvent.PROMPT_OPTIMIZED] == []
    assert view.events[NotifyEvent.TRAINING_COMPLETED] == list(Channel)
    chosen = domain.chosen({NotifyEvent.PROMPT_OPTIMIZED: [Channel.WEBHOOK, Channel.WEBHOOK]})
    assert chosen == {NotifyEvent.PROMPT_OPTIMIZED: [Channel.WEBHOOK]}


def test_a_webhook_filters_by_its_own_events():
    assert domain.wants(webhook(), "training.failed")
    only = webhook(events=[NotifyEvent.GENERATION_COMPLETED])
    assert domain.wants(only, "generation.completed")
    assert not domain.wants(only, "training.failed")


# --- secret rotation -------------------------------------------------------------------


def test_rotation_puts_the_new_secret_first_and_the_old_one_expires_after_the_overlap():
    at = NOW + timedelta(days=2)
    secrets = domain.rotated(webhook().secrets, "whsec_second", at, 3600)
    assert [s.secret for s in secrets] == ["whsec_second", "whsec_first"]
    assert secrets[0].expires_at is None
    assert secrets[1].expires_at == at + timedelta(hours=1)
    view = domain.webhook_view(webhook(secrets=secrets), at)
    assert view.secret_rotated_at == at
    assert view.previous_secret_expires_at == at + timedelta(hours=1)
    expired = domain.webhook_view(webhook(secrets=secrets), at + timedelta(hours=2))
    assert expired.previous_secret_expires_at is None


def test_a_later_rotation_drops_expired_secrets_and_keeps_earlier_expiries():
    later = NOW + timedelta(minutes=30)
    twice = domain.rotated(domain.rotated(webhook().secrets, "whsec_2", NOW, 3600),
                           "whsec_3", later, 3600)
    assert [s.secret for s in twice] == ["whsec_3", "whsec_2", "whsec_first"]
    assert twice[2].expires_at == NOW + timedelta(hours=1)  # not extended
    much_later = NOW + timedelta(hours=3)
    thrice = domain.rotated(twice, "whsec_4", much_later, 3600)
    assert [s.secret for s in thrice] == ["whsec_4", "whsec_3"]


# --- attempts ----------------------------------------------------------------------------


def test_a_delivered_attempt_settles_the_record():
    done = domain.after_attempt(record(), Outcome(OutcomeKind.DELIVERED, 200), NOW, None)
    assert (done.state, done.delivered_at, done.round_attempts) == (
        DeliveryState.DELIVERED, NOW, 1)
    assert done.attempts[0].status_code == 200


def test_a_retry_keeps_it_pending_until_the_next_attempt():
    again = domain.after_attempt(record(), Outcome(OutcomeKind.RETRY, 500), NOW, 5.0)
    assert again.state is DeliveryState.PENDING
    assert again.next_attempt_at == NOW + timedelta(seconds=5)
    spent = domain.after_attempt(again, Outcome(OutcomeKind.RETRY, 500), NOW, None)
    assert (spent.state, spent.round_attempts, len(spent.attempts)) == (
        DeliveryState.FAILED, 2, 2)


def test_gone_drops_and_refused_fails():
    gone = domain.after_attempt(record(), Outcome(OutcomeKind.GONE, 410), NOW, None)
    refused = domain.after_attempt(record(), Outcome(OutcomeKind.REFUSED, 400), NOW, None)
    assert (gone.state, refused.state) == (DeliveryState.DROPPED, DeliveryState.FAILED)


def test_a_redelivery_starts_a_new_round_and_keeps_the_history():
    failed = domain.after_attempt(record(), Outcome(OutcomeKind.RETRY, 500), NOW, None)
    again = domain.new_round(failed)
    assert (again.state, again.round_attempts, len(again.attempts)) == (
        DeliveryState.PENDING, 0, 1)


def test_the_reason_a_target_was_disabled_names_the_attempts_and_the_last_answer():
    reason = domain.exhausted_reason(6, Outcome(OutcomeKind.RETRY, 503, error="busy"))
    assert reason == "6 attempts failed; last: HTTP 503: busy"
    assert domain.exhausted_reason(2, Outcome(OutcomeKind.RETRY, error="timed out")) == (
        "2 attempts failed; last: no answer: timed out")


def test_the_deliver_message_carries_the_delivery_id():
    deliver = domain.deliver_of(record())
    assert (deliver.message_id, deliver.delivery_id, deliver.target_id) == ("d-1", "d-1",
                                                                            "hook-1")


def test_a_trial_notice_has_an_event_id_of_its_own():
    first, second = domain.trial_notice(USER, NOW), domain.trial_notice(USER, NOW)
    assert first.event == "webhook.test" and first.event_id != second.event_id


# --- subjects and slots ------------------------------------------------------------------


def test_an_event_subject_names_the_event_and_its_user():
    assert event_of_subject("terra.evt.training.completed.u-1") == (
        NotifyEvent.TRAINING_COMPLETED, "u-1")
    for subject in ("terra.evt.training.progress.u-1", "terra.evt.training.completed",
                    "other.evt.training.completed.u-1"):
        with pytest.raises(PermanentFailure):
            event_of_subject(subject)


async def test_a_target_holds_at_most_its_slots():
    slots = TargetSlots(2)
    assert await slots.take("a", "ann") and await slots.take("a", "ann")
    assert not await slots.take("a", "ann")
    assert await slots.take("b", "bob")
    await slots.release("a", "ann")
    assert await slots.take("a", "ann")
    # A full target's next delivery waits for the slot a fast send gives back.
    waiting = asyncio.create_task(slots.take("a", "ann", wait_s=5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await slots.release("a", "ann")
    assert await waiting
    for target, user in (("a", "ann"), ("a", "ann"), ("b", "bob")):
        await slots.release(target, user)
    assert slots.held("a") == 0 and slots.held("b") == 0


async def test_a_slow_target_is_busy_at_once_and_one_user_holds_only_their_share(
        monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("notifier_service.sending.time.monotonic", lambda: clock[0])
    slots = TargetSlots(2, user_limit=3)
    assert await slots.take("slow", "ann") and await slots.take("slow", "ann")
    clock[0] += 1.0  # its two sends have been in flight a second: it is slow
    assert not await slots.take("slow", "ann", wait_s=5.0)  # no wait in hand
    # The same user's other targets: one more slot, then the user's share is spent.
    assert await slots.take("other", "ann")
    assert not await slots.take("third", "ann", wait_s=5.0)
    assert await slots.take("third", "bob")  # another user is not held up
