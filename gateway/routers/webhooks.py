"""The caller's webhooks: URLs of their servers that notifier_service calls, signed
(Standard Webhooks), when a job ends. The secret is shown once, when created or rotated;
`sent` describes the request a webhook receives (the OpenAPI document's `webhooks`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contracts.ids import Id
from contracts.notifications import (
    MAX_URL_LENGTH,
    CreateWebhook,
    DeleteWebhook,
    DeliveryList,
    DeliveryQueued,
    DeliveryView,
    GetWebhook,
    ListDeliveries,
    ListWebhooks,
    NotifierDone,
    NotifyEvent,
    RedeliverWebhook,
    RotateWebhookSecret,
    TestWebhook,
    UpdateWebhook,
    WebhookList,
    WebhookPayload,
    WebhookReply,
    WebhookView,
)
from contracts.topology import NotifierRpc
from gateway.deps import CurrentUser, Notifier

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
sent = APIRouter()  # what Terra sends: the OpenAPI document's `webhooks`, not routes

SIGNING = """

Each request is a `POST` of JSON (the `WebhookPayload` schema: `type`, `timestamp`,
`data`), signed as [Standard Webhooks](https://www.standardwebhooks.com/) say:
`webhook-id` (the delivery id: the same on every retry and redelivery, so a receiver
drops repeats), `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64
HMAC-SHA256 of "<id>.<timestamp>.<body>">` with the secret's key; space-separated, two of
them for a day after a rotation). Verify with the `standardwebhooks` package:
`Webhook(secret).verify(body, headers)`. Answer 2xx within 10 seconds (the operator's
`TERRA_NOTIFY_TIMEOUT_S`); anything else is
retried with backoff for about 18 hours (`Retry-After` honoured on 429 and 503), then the
webhook is disabled and says why; 410 removes it. Redirects are not followed."""


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies -------------------------------------------------------------------------------


class NewWebhookBody(Body):
    """A URL of yours to call when your jobs end."""

    url: str = Field(max_length=MAX_URL_LENGTH, description="Where to `POST` (https; in "
                     "production, never a private, loopback or link-local address).",
                     examples=["https://example.com/terra/webhook"])
    events: list[NotifyEvent] | None = Field(
        default=None, description="Only these events (within your preferences); "
        "null or left out: every event your preferences send to webhooks.",
        examples=[["training.completed", "generation.completed"]])
    description: str | None = Field(default=None, max_length=200, description="A note "
                                    "of yours, to tell webhooks apart.",
                                    examples=["production server"])


class WebhookChangesBody(Body):
    """What to change; a field left out stays as it is."""

    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH,
                            description="The new URL.",
                            examples=["https://example.com/terra/webhook"])
    events: list[NotifyEvent] | None = Field(
        default=None, description="Only these events; `null`: every event again.",
        examples=[["training.completed"]])
    description: str | None = Field(default=None, max_length=200,
                                    description="The new note.", examples=["staging"])
    enabled: bool | None = Field(default=None, description="`true` turns a disabled "
                                 "webhook back on (and clears why it was disabled); "
                                 "`false` pauses it.", examples=[True])


# --- answers ------------------------------------------------------------------------------


class WebhookWithSecret(BaseModel):
    """The webhook and its signing secret: shown this once, never again."""

    webhook: WebhookView = Field(description="The webhook.")
    secret: str = Field(description="`whsec_` and base64 of the signing key: keep it to "
                        "verify `webhook-signature`.",
                        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class Webhooks(BaseModel):
    """Your webhooks, newest first."""

    webhooks: list[WebhookView] = Field(description="Each webhook (without its secret).")


class Deliveries(BaseModel):
    """A webhook's recent deliveries (a week), the newest first."""

    deliveries: list[DeliveryView] = Field(description="Each delivery and its attempts.")


class DeliveryAccepted(BaseModel):
    """The delivery is queued; its attempts show in `GET /api/webhooks/{id}/deliveries`."""

    delivery_id: str = Field(description="Its id: the `webhook-id` header it is sent with.",
                             examples=["7c0e1d2f3a4b5c6d7e8f9a0b1c2d3e4f"])


# --- routes -------------------------------------------------------------------------------


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookWithSecret)
async def create_webhook(body: NewWebhookBody, caller: CurrentUser,
                         notifier: Notifier) -> WebhookWithSecret:
    """Add a webhook: Terra calls its URL when one of your jobs ends (the events your
    preferences send to webhooks, narrowed by `events`). The answer holds the signing
    secret, shown this once."""
    reply: WebhookReply = await notifier.call(
        NotifierRpc.CREATE_WEBHOOK,
        CreateWebhook(user_id=caller.user_id, url=body.url, events=body.events,
                      description=body.description), WebhookReply)
    return WebhookWithSecret(webhook=reply.webhook, secret=reply.secret)


create_webhook.__doc__ += SIGNING


@router.get("", response_model=Webhooks)
async def list_webhooks(caller: CurrentUser, notifier: Notifier) -> Webhooks:
    """Your webhooks (never their secrets)."""
    reply: WebhookList = await notifier.call(
        NotifierRpc.LIST_WEBHOOKS, ListWebhooks(user_id=caller.user_id), WebhookList)
    return Webhooks(webhooks=reply.webhooks)


@router.get("/{webhook_id}", response_model=WebhookView)
async def get_webhook(webhook_id: Id, caller: CurrentUser, notifier: Notifier) -> WebhookView:
    """One webhook of yours; when it kept failing, `disabled_at` and `disabled_reason` say
    since when and why."""
    reply: WebhookReply = await notifier.call(
        NotifierRpc.GET_WEBHOOK, GetWebhook(user_id=caller.user_id, webhook_id=webhook_id),
        WebhookReply)
    return reply.webhook


@router.patch("/{webhook_id}", response_model=WebhookView)
async def update_webhook(webhook_id: Id, body: WebhookChangesBody, caller: CurrentUser,
                         notifier: Notifier) -> WebhookView:
    """Change a webhook's URL, events or note, or turn it back on (`enabled: true`) once
    its server works again."""
    given = body.model_fields_set
    request = UpdateWebhook(
        user_id=caller.user_id, webhook_id=webhook_id, url=body.url, events=body.events,
        all_events="events" in given and body.events is None,
        description=body.description, enabled=body.enabled)
    reply: WebhookReply = await notifier.call(NotifierRpc.UPDATE_WEBHOOK, request,
                                              WebhookReply)
    return reply.webhook


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook_id: Id, caller: CurrentUser, notifier: Notifier) -> Response:
    """Remove a webhook: nothing more is sent to it, pending retries included."""
    await notifier.call(NotifierRpc.DELETE_WEBHOOK,
                        DeleteWebhook(user_id=caller.user_id, webhook_id=webhook_id),
                        NotifierDone)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret)
async def rotate_secret(webhook_id: Id, caller: CurrentUser,
                        notifier: Notifier) -> WebhookWithSecret:
    """A new signing secret, shown this once. For a day both sign (`webhook-signature`
    carries two signatures), so a receiver can switch without missing one
    (`previous_secret_expires_at`)."""
    reply: WebhookReply = await notifier.call(
        NotifierRpc.ROTATE_WEBHOOK_SECRET,
        RotateWebhookSecret(user_id=caller.user_id, webhook_id=webhook_id), WebhookReply)
    return WebhookWithSecret(webhook=reply.webhook, secret=reply.secret)


@router.post("/{webhook_id}/test", status_code=status.HTTP_202_ACCEPTED,
             response_model=DeliveryAccepted)
async def test_webhook(webhook_id: Id, caller: CurrentUser,
                       notifier: Notifier) -> DeliveryAccepted:
    """Send a `webhook.test` event now, signed as any other, to check a receiver."""
    reply: DeliveryQueued = await notifier.call(
        NotifierRpc.TEST_WEBHOOK, TestWebhook(user_id=caller.user_id, webhook_id=webhook_id),
        DeliveryQueued)
    return DeliveryAccepted(delivery_id=reply.delivery_id)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver",
             status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryAccepted)
async def redeliver(webhook_id: Id, delivery_id: Id, caller: CurrentUser,
                    notifier: Notifier) -> DeliveryAccepted:
    """Send one delivery again, with the same `webhook-id` (a receiver that has it already
    may drop it), and a new round of retries."""
    reply: DeliveryQueued = await notifier.call(
        NotifierRpc.REDELIVER_WEBHOOK,
        RedeliverWebhook(user_id=caller.user_id, webhook_id=webhook_id,
                         delivery_id=delivery_id), DeliveryQueued)
    return DeliveryAccepted(delivery_id=reply.delivery_id)


@router.get("/{webhook_id}/deliveries", response_model=Deliveries)
async def list_deliveries(webhook_id: Id, caller: CurrentUser,
                          notifier: Notifier) -> Deliveries:
    """A webhook's deliveries of the last week, the newest first: each one's state and
    attempts (when, the HTTP status or the error, how long it took)."""
    reply: DeliveryList = await notifier.call(
        NotifierRpc.LIST_DELIVERIES,
        ListDeliveries(user_id=caller.user_id, webhook_id=webhook_id), DeliveryList)
    return Deliveries(deliveries=reply.deliveries)


# --- what a webhook receives --------------------------------------------------------------

WebhookIdHeader = Annotated[str, Header(
    description="The delivery id: the same on every retry and redelivery (drop repeats).",
    examples=["7c0e1d2f3a4b5c6d7e8f9a0b1c2d3e4f"])]
WebhookTimestampHeader = Annotated[int, Header(
    description="When it was signed, in Unix seconds (refuse ones far from now).",
    examples=[1764100641])]
WebhookSignatureHeader = Annotated[str, Header(
    description="`v1,<base64 signature>`, space-separated (two after a rotation).",
    examples=["v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="])]


@sent.post("job-ended", operation_id="job_ended", status_code=status.HTTP_204_NO_CONTENT)
async def job_ended(payload: WebhookPayload, webhook_id: WebhookIdHeader,
                    webhook_timestamp: WebhookTimestampHeader,
                    webhook_signature: WebhookSignatureHeader) -> None:
    """What Terra sends your webhook's URL when one of your jobs ends (or on
    `POST /api/webhooks/{webhook_id}/test`)."""


job_ended.__doc__ += SIGNING
