"""Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID): the payload is
encrypted to the browser's key, so only the browser reads it (the prompt may go)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import aiohttp
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException

from contracts.notifications import Language, Notice, NotifyEvent, WebPushSubscription
from notifier_service.delivery import Outcome, OutcomeKind, web_push_topic
from notifier_service.egress import Answer, post
from notifier_service.texts import render
from notifier_service.vapid import CLAIMS_LIFETIME_S, authorization, public_key_b64url

# Push services must accept 4096 bytes of encrypted body (RFC 8291 §4); aes128gcm adds
# 86 bytes of header, 16 of tag and 1 of padding. A longer prompt is cut to fit.
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
# A signed VAPID header is reused per push service while it has this long left.
REUSE_MARGIN_S = 3600
MAX_SIGNED_ORIGINS = 1000
FAILURES = {NotifyEvent.TRAINING_FAILED, NotifyEvent.GENERATION_FAILED}


def payload(notice: Notice, language: Language, delivery_id: str) -> bytes:
    """What the service worker receives (JSON), within what a push service accepts."""
    text = render(notice, language)
    fields = {
        "title": text.title, "body": text.body, "event": notice.event,
        "job_id": notice.job_id, "model_id": notice.model_id,
        "image_ids": notice.image_ids, "deep_link": notice.deep_link,
        "delivery_id": delivery_id, "prompt": None,
    }
    prompt = notice.prompt if notice.event == NotifyEvent.PROMPT_OPTIMIZED else None
    while True:
        encoded = json.dumps({**fields, "prompt": prompt}, ensure_ascii=False).encode()
        if len(encoded) <= MAX_PLAINTEXT or not prompt:
            return encoded
        prompt = prompt[:len(prompt) - max(1, len(encoded) - MAX_PLAINTEXT)] or None


class WebPushSender:
    """`WebPushSender(session, vapid, subject, ttl_s)`: `session` from
    `egress.egress_session`, `vapid` from `vapid.load_vapid`, `subject` and `ttl_s` from
    settings (`vapid_subject`, `web_push_ttl_s`)."""

    def __init__(self, session: aiohttp.ClientSession, vapid: Vapid, subject: str,
                 ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError("a TTL of 0 drops every message for a browser not online")
        self.session = session
        self.vapid = vapid
        self.subject = subject
        self.ttl_s = ttl_s
        self.public_key = public_key_b64url(vapid)
        self._signed: dict[str, tuple[str, float]] = {}  # origin -> (header, expires at)

    async def send(self, target: WebPushSubscription, notice: Notice,
                   delivery_id: str) -> Outcome:
        data = payload(notice, target.language, delivery_id)
        subscription = {"endpoint": target.endpoint,
                        "keys": {"p256dh": target.keys.p256dh, "auth": target.keys.auth}}
        try:
            body = WebPusher(subscription).encode(data, content_encoding="aes128gcm")["body"]
        except (WebPushException, ValueError) as exc:
            return Outcome(OutcomeKind.REFUSED,
                           error=f"the subscription's keys are unusable: {exc}"[:300])
        urgent = notice.event in FAILURES
        headers = {
            "TTL": str(self.ttl_s),
            "Urgency": "high" if urgent else "normal",
            # One per job: a repeat replaces a message the push service still holds.
            "Topic": web_push_topic(notice.job_id or notice.event_id),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        try:
            headers["Authorization"] = self._authorization(target.endpoint)
        except VapidException as exc:  # an endpoint py_vapid cannot sign for (an IPv6 host)
            return Outcome(OutcomeKind.REFUSED, error=f"cannot sign for this push service: "
                           f"{exc}"[:300])
        answer = await post(self.session, target.endpoint, body=body, headers=headers)
        return answer if isinstance(answer, Outcome) else outcome_of(answer)

    def _authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._signed.get(origin)
        if cached is None or cached[1] - now < REUSE_MARGIN_S:
            cached = (authorization(self.vapid, endpoint, self.subject),
                      now + CLAIMS_LIFETIME_S)
            if len(self._signed) >= MAX_SIGNED_ORIGINS:
                self._signed.clear()
            self._signed[origin] = cached
        return cached[0]


def outcome_of(answer: Answer) -> Outcome:
    status = answer.status
    if status in (200, 201, 202):
        return answer.outcome(OutcomeKind.DELIVERED)
    if status in (404, 410):
        return answer.outcome(OutcomeKind.GONE, "the push service no longer knows this "
                              "subscription")
    # 400 (malformed), 401/403 (VAPID refused), 413 (too large): this message never will.
    return answer.otherwise()
