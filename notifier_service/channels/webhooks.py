"""Webhooks, signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`), so any of its libraries verifies them."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook as Signer

from contracts.notifications import Notice, SigningSecret, Webhook, WebhookData, WebhookPayload
from notifier_service import domain
from notifier_service.delivery import Outcome, OutcomeKind
from notifier_service.egress import Answer, post

USER_AGENT = "Terra-Webhooks/1"


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes them: `whsec_` + base64 of 32 bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def live_secrets(webhook: Webhook, now: datetime) -> list[SigningSecret]:
    """The secrets that sign now, the newest first: after a rotation the old one signs
    beside the new until it expires, so receivers can switch without missing one."""
    live = domain.live_secrets(webhook.secrets, now) or webhook.secrets[:1]
    return sorted(live, key=lambda s: s.created_at, reverse=True)


def payload_of(notice: Notice) -> WebhookPayload:
    """The body: its `timestamp` is when the event happened, so every attempt of one
    delivery sends the same bytes (only the headers' timestamp and signature change)."""
    return WebhookPayload(type=notice.event, timestamp=notice.occurred_at, data=WebhookData(
        job_id=notice.job_id, model_id=notice.model_id, image_ids=notice.image_ids,
        reason=notice.reason, deep_link=notice.deep_link, prompt=notice.prompt))


def signed_headers(webhook: Webhook, delivery_id: str, body: bytes,
                   now: datetime) -> dict[str, str]:
    signatures = [Signer(secret.secret).sign(delivery_id, now, body)
                  for secret in live_secrets(webhook, now)]
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class WebhookSender:
    """`WebhookSender(session)`: `session` from `egress.egress_session`."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(self, target: Webhook, notice: Notice, delivery_id: str) -> Outcome:
        body = payload_of(notice).model_dump_json().encode()
        headers = signed_headers(target, delivery_id, body, datetime.now(UTC))
        answer = await post(self.session, target.url, body=body, headers=headers)
        return answer if isinstance(answer, Outcome) else outcome_of(answer)


def outcome_of(answer: Answer) -> Outcome:
    if 200 <= answer.status < 300:
        return answer.outcome(OutcomeKind.DELIVERED)
    if answer.status == 410:
        return answer.outcome(OutcomeKind.GONE, "the endpoint answered 410 Gone")
    if (redirect := answer.redirect) is not None:
        return redirect
    # Anything else may be a deploy, an outage, a bug being fixed: the schedule decides.
    return answer.retry(answer.excerpt() or None)
