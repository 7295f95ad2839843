"""Notifications that reach a closed app, end to end: a browser's Web Push subscription
registered through the gateway, a real generation (tiny FLUX), and the push service (a
local stand-in) receiving a message that only the browser's keys decrypt."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from contracts.generation import GeneratedImage, ImageGenerated
from contracts.notifications import Language, Notice
from notifier_service.texts import render
from testing.push_standins import Reply, WebPushClientKeys, WebPushReceiver, verify_vapid
from tests.e2e.client import publish, register

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOCAL_VAPID_SUBJECT = "mailto:operator@terra.localhost"  # NotifierSettings' local default


@pytest.fixture
async def push_service():
    async with WebPushReceiver() as receiver:
        yield receiver


async def subscribe(http, account, push_service, name: str, language: str = "en"):
    keys = WebPushClientKeys.generate()
    response = await http.post("/api/notifications/webpush", headers=account.headers,
                               json={**keys.subscription(push_service.endpoint(name)),
                                     "expirationTime": None, "language": language})
    assert response.status_code == 201, response.text
    return keys, response.json()["subscription"]


async def test_a_generation_ends_in_a_web_push_only_the_browser_decrypts(
        http, push_service, notifier, generator):
    alice = await register(http)
    key = (await http.get("/api/notifications/webpush/key", headers=alice.headers)).json()
    keys, subscription = await subscribe(http, alice, push_service, "alice", language="fr")
    assert subscription["endpoint_origin"] == push_service.url

    accepted = await http.post("/api/generate/image", headers=alice.headers, json={
        "prompt": "a lighthouse at dusk", "width": 256, "height": 256, "seed": 3})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    [push] = await push_service.wait_for(1, path=push_service.path("alice"), timeout=90)
    message = json.loads(keys.decrypt(push.body))
    assert message["event"] == "generation.completed" and message["job_id"] == job_id
    assert message["deep_link"] == f"/images/{message['image_ids'][0]}"
    # In the subscription's language, as notifier_service words it.
    notice = Notice(event="generation.completed", event_id="e", user_id=alice.user_id,
                    occurred_at=datetime.now(UTC), job_id=job_id,
                    image_ids=message["image_ids"], deep_link=message["deep_link"])
    french = render(notice, Language.FR)
    assert (message["title"], message["body"]) == (french.title, french.body)
    images = (await http.get("/api/me/images", headers=alice.headers)).json()["items"]
    assert message["image_ids"] == [image["image_id"] for image in images]

    # RFC 8292: signed by the key the gateway publishes, for this push service, with the
    # operator's contact; RFC 8030: kept a while for an offline browser, one topic per job.
    claims, signer = verify_vapid(push.headers["authorization"])
    assert signer == key["public_key"]
    assert claims["aud"] == push_service.url and claims["sub"] == LOCAL_VAPID_SUBJECT
    assert int(push.headers["ttl"]) > 0
    assert push.headers["urgency"] in {"normal", "high"} and push.headers["topic"]
    assert push.headers["content-encoding"] == "aes128gcm"
    # Nothing else was sent for the job: one ending, one notification.
    await asyncio.sleep(1.0)
    assert len(push_service.received(push_service.path("alice"))) == 1


async def test_a_push_service_that_says_gone_removes_the_subscription(
        http, nc, push_service, notifier):
    bob = await register(http)
    _, subscription = await subscribe(http, bob, push_service, "bob")
    push_service.always(push_service.path("bob"), Reply(410))
    await publish(nc.jetstream(), ImageGenerated(user_id=bob.user_id, job_id="j-gone", images=[
        GeneratedImage(image_id="i-gone", key="images/x.png", width=256, height=256, seed=1)]))

    await push_service.wait_for(1, path=push_service.path("bob"), timeout=30)
    for _ in range(100):
        listed = (await http.get("/api/notifications", headers=bob.headers)).json()
        if not listed["web_push"]:
            break
        await asyncio.sleep(0.1)
    assert listed["web_push"] == [], listed
    assert (await http.delete(f"/api/notifications/webpush/{subscription['id']}",
                              headers=bob.headers)).status_code == 404
