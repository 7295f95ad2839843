"""The words of the OpenAPI document (`gateway.openapi`): the response bodies routes
build as plain dicts, what each tag groups, descriptions and examples of the fields and
parameters whose models have none, and the document's own description (the WebSocket
protocol included)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.prompt import PromptChange, PromptDecision, TokenCounts

# --- response bodies the routes build as plain dicts ------------------------------------


class Alive(BaseModel):
    """The process answers."""

    status: Literal["ok"] = Field(description="Always `ok`.", examples=["ok"])


class Ready(BaseModel):
    """Everything the gateway needs answers."""

    status: Literal["ready"] = Field(description="Always `ready`.", examples=["ready"])
    sockets: int = Field(description="WebSockets open on this gateway.", examples=[3])
    workers: dict[str, int] = Field(description="Live workers per job domain.",
                                    examples=[{"prompt": 1, "training": 1, "generation": 1}])


class CancelRequested(BaseModel):
    """The job is told to stop; its `<domain>.cancelled.v1` event follows on the socket."""

    job_id: str = Field(description="The job.", examples=["0f3c9a7e5b2d4c1a8e6f9d0b7a2c4e1f"])
    status: Literal["cancel_requested"] = Field(description="Always `cancel_requested`.",
                                                examples=["cancel_requested"])


class ModelDeleting(BaseModel):
    """The deletion is on its way; `training.model_deleted.v1` follows on the socket."""

    model_id: str = Field(description="The model.",
                          examples=["5b7e0c2a9d4f4e3b8a1c6d2e0f9a7b3c"])
    status: Literal["deleting"] = Field(description="Always `deleting`.",
                                        examples=["deleting"])


class ImageDeleting(BaseModel):
    """The deletion is on its way; `generation.image_deleted.v1` follows on the socket."""

    image_id: str = Field(description="The image.",
                          examples=["9a8b7c6d5e4f4a3b2c1d0e9f8a7b6c5d"])
    status: Literal["deleting"] = Field(description="Always `deleting`.",
                                        examples=["deleting"])


class OptimizationResult(BaseModel):
    """The optimised prompt (the `prompt.optimized.v1` event without its envelope)."""

    job_id: str = Field(description="The prompt job.",
                        examples=["3c29003f8a1b4c2d9e7f6a5b4c3d2e1f"])
    original: str = Field(description="The prompt as sent.",
                          examples=["me on a beach at sunset, 4k, masterpiece"])
    optimized: str = Field(description="The rewritten prompt.", examples=[
        "Me on a beach at sunset. Cinematic film still, shallow depth of field."])
    variants: list[str] = Field(description="`variants` rewrites, the first being "
                                "`optimized`.", examples=[[
                                    "Me on a beach at sunset. Cinematic film still."]])
    analysis: dict[str, str | None] = Field(
        description="What the prompt says: subject, action, setting, style, lighting, "
        "composition, mood, colour, text (null where it says nothing).",
        examples=[{"subject": "me", "setting": "on a beach", "lighting": "sunset"}])
    changes: list[PromptChange] = Field(description="Each change and why.")
    tokens: TokenCounts = Field(description="Token counts of `optimized` for both text "
                                "encoders.")
    warnings: list[str] = Field(description="What the optimiser could not fix.",
                                examples=[[]])
    engine: str = Field(description="Who rewrote it: `offline`, `llm:openai/<model>` or "
                        "`llm:transformers/<folder>`.", examples=["offline"])
    language: str | None = Field(description="ISO code of the original's language.",
                                 examples=["en"])


class DecisionRecorded(BaseModel):
    """What was kept of an optimised prompt."""

    job_id: str = Field(description="The prompt job.",
                        examples=["3c29003f8a1b4c2d9e7f6a5b4c3d2e1f"])
    decision: PromptDecision = Field(description="`unchanged`, `edited` or `rejected`.",
                                     examples=["edited"])
    final_prompt: str = Field(description="The prompt kept.",
                              examples=["Me on a beach at sunset, golden light."])


class PromptQueued(BaseModel):
    """The job is queued; its result comes as an event and in `GET /api/jobs/{job_id}`."""

    job_id: str = Field(description="The prompt job.",
                        examples=["3c29003f8a1b4c2d9e7f6a5b4c3d2e1f"])
    status: Literal["queued"] = Field(description="Always `queued`.", examples=["queued"])


PNG = {"image/png": {"schema": {"type": "string", "format": "binary",
                                "description": "The PNG, with its prompt and seed in text "
                                "chunks."}}}

# (method, path) -> status -> the body's model, or a content map.
RESPONSE_BODIES: dict[tuple[str, str], dict[int, type[BaseModel] | dict]] = {
    ("GET", "/health"): {200: Alive},
    ("GET", "/ready"): {200: Ready},
    ("POST", "/api/prompt/optimize"): {200: OptimizationResult, 202: PromptQueued},
    ("POST", "/api/prompt/{job_id}/accept"): {200: DecisionRecorded, 202: PromptQueued},
    ("POST", "/api/training/{job_id}/cancel"): {202: CancelRequested},
    ("POST", "/api/generate/{job_id}/cancel"): {202: CancelRequested},
    ("DELETE", "/api/models/{model_id}"): {202: ModelDeleting},
    ("DELETE", "/api/images/{image_id}"): {202: ImageDeleting},
    ("GET", "/api/images/{image_id}"): {200: PNG},
}


# The tags in the order a reader meets them, each with what it groups.
TAGS = {
    "accounts": "Sign-up, sign-in, token refresh, sign-out, password, your account.",
    "prompt": "Prompt optimisation for FLUX: styles, optimise, accept.",
    "training": "Photo sets and LoRA trainings of you.",
    "models": "Your LoRA models.",
    "generation": "Image generation, and your images.",
    "jobs": "Jobs of every kind: one by id, or yours a page at a time.",
    "websockets": "Your job events, live: see the description above for `/ws`.",
    "notifications": "Push notifications when your jobs end: browsers (Web Push), phones "
                     "(Expo or FCM), and which events notify where.",
    "webhooks": "Signed calls to your servers when your jobs end (Standard Webhooks).",
    "console": "What the web console needs to know about this deployment.",
    "health": "Liveness and readiness, for orchestrators.",
}


PARAMETER_DOCS: dict[str, tuple[str, Any]] = {
    "idempotency-key": (("Any string up to 200 characters you choose per request: a retry "
                        "with the same key names the same job and never runs it twice."),
                        "7c1d0f9e-retry-safe"),
    "user_id": ("Your own user id (`GET /api/me`): anyone else's is 404.",
                "00d609cc4b3a4f2e9d8c7b6a5f4e3d2c"),
    "subscription_id": ("One of your Web Push subscriptions (`GET /api/notifications`).",
                        "3f9a0c2b7d1e4f5a6b8c9d0e"),
    "device_id": ("One of your devices (`GET /api/notifications`).",
                  "8b1c2d3e4f5a6b7c8d9e0f1a"),
    "webhook_id": ("One of your webhooks (`GET /api/webhooks`).", "5e6f7a8b9c0d1e2f3a4b5c6d"),
    "delivery_id": ("One of its deliveries (`GET /api/webhooks/{webhook_id}/deliveries`).",
                    "7c0e1d2f3a4b5c6d7e8f9a0b1c2d3e4f"),
}


# Descriptions and examples of fields that have none in their model (contracts' models,
# and the routers' plain response views), by `Schema.field` or by field name alone.
FIELD_DOCS: dict[str, tuple[str, Any]] = {
    "job_id": ("The job's id.", "0f3c9a7e5b2d4c1a8e6f9d0b7a2c4e1f"),
    "model_id": ("The model's id.", "5b7e0c2a9d4f4e3b8a1c6d2e0f9a7b3c"),
    "dataset_id": ("The photo set's id.", "fa0e003c1b2d4e5f8a9b0c1d2e3f4a5b"),
    "image_id": ("The image's id.", "9a8b7c6d5e4f4a3b2c1d0e9f8a7b6c5d"),
    "user_id": ("The owner's user id.", "00d609cc4b3a4f2e9d8c7b6a5f4e3d2c"),
    "created_at": ("When it was created (ISO 8601, UTC).", "2026-11-25T19:57:21.620648Z"),
    "updated_at": ("When it last changed (ISO 8601, UTC).", "2026-11-25T19:58:02.113027Z"),
    "expires_at": ("When it is deleted (ISO 8601, UTC).", "2026-12-02T19:57:21.620648Z"),
    "width": ("Width in pixels.", 1024),
    "height": ("Height in pixels.", 1024),
    "seed": ("The random seed: the same seed, prompt and settings give the same image.", 7),
    "prompt": ("The prompt (1 to 2,000 characters).", "a lighthouse at dusk"),
    "trigger_word": ("The word that calls up the person in a prompt.", "zyrqa"),
    "steps": ("Denoising or training steps.", 28),
    "rank": ("The LoRA's rank.", 16),
    "progress": ("How far along, from 0 to 1.", 0.4),
    "detail": ("What is happening or happened, for a person.", None),
    "warnings": ("What the checks noticed but did not refuse.",
                 ["smaller than 512 px on its short side"]),
    "access_token": (("A 15-minute access token (EdDSA JWT), sent as `Authorization: "
                     "Bearer <token>`."), "eyJhbGciOiJFZERTQSIsImtpZCI6IjEifQ.e30.sig"),
    "refresh_token": (("A single-use refresh token for `POST /api/auth/refresh`: each use "
                      "answers a new one."), "SG-_vHJXq2m7Yk0Zr4t1"),
    "token_type": ("Always `bearer`.", "bearer"),
    "expires_in": ("Seconds until the access token expires.", 900),
    "user": ("The account.", None),
    "email": ("The account's email address.", "ada@example.com"),
    "password": ("At least 10 characters, not a common password, not the email.",
                 "correct horse battery staple"),
    "display_name": ("How the user is greeted.", "Ada"),
    "google_id_token": (("A Google ID token, instead of `email` and `password`, when Google "
                        "sign-in is configured."), None),
    "providers": ("How the account signs in.", ["password"]),
    "id": ("The id.", "00d609cc4b3a4f2e9d8c7b6a5f4e3d2c"),
    "name": ("The style's name, for `style`.", "cinematic"),
    "label": ("The style's name for people.", "Cinematic"),
    "description": ("What the style does.", "Film still: shallow depth of field, anamorphic."),
    "type": ("The message type.", "job.state.v1"),
    "kind": ("The kind of job: prompt, training or generation.", "generation"),
    "result": ("What the job produced (its ending event's fields).", {}),
    "error": ("Why the job failed (`code`, `reason`), or null.", None),
    "cancel_requested": ("Whether a cancel was asked for.", False),
    "code": ("The failure code.", "out_of_memory"),
    "reason": ("Why, for a person.", "The GPU ran out of memory."),
    "url": ("The image through the gateway (needs the access token).",
            "/api/images/9a8b7c6d5e4f4a3b2c1d0e9f8a7b6c5d"),
    "download_url": ("A presigned object-storage URL, valid 15 minutes, needing no token.",
                     "https://s3.example.com/terra/images/...&X-Amz-Signature=..."),
    "sample_urls": ("Presigned URLs (valid 15 minutes) of the sample images.", []),
    "base_model": ("The base model the LoRA was trained on.", "dev"),
    "image_count": ("How many photos the set holds.", 12),
    "models": ("Your models trained on this set.", []),
    "images": ("The stored photos.", []),
    "queue_position": ("Jobs ahead of it in the queue (0: next).", 0),
    "model": ("The base model: `schnell`, or `dev` (with a LoRA).", "schnell"),
    "lora_id": ("The LoRA (one of your models) applied, or null.", None),
    "lora_scale": ("How strongly the LoRA applies, 0 to 2.", 1.0),
    "guidance": ("Guidance scale; leave out for the model's default.", None),
    "num_images": ("How many images, 1 to 4.", 1),
    "learning_rate": ("The learning rate.", 0.0001),
    "resolution": ("Training resolution in pixels (a multiple of 64).", 1024),
    "variants": ("How many rewrites, 1 to 4.", 1),
    "status": ("The state.", "queued"),
    "attempts": ("How many times it started.", 1),
    "started_at": ("When its current attempt started.", None),
    "files": ("The photos.", None),
    "everywhere": ("End every session of the account.", False),
    "final_prompt": ("What you kept.", "Me on a beach at sunset, golden light."),
    "style": ("A style name.", "cinematic"),
    "for_model": ("One of your models.", None),
    "current_password": ("Your password now.", "correct horse battery staple"),
    "new_password": ("The new password (the registration rules apply).",
                     "another long passphrase 7"),
    "csrf_token": ("Cookie mode: the session's CSRF token.", None),
    "text": ("The text concerned.", "cinematic film still"),
    "clip": ("CLIP tokens (the encoder reads 77).", 23),
    "t5": ("T5 tokens, estimated.", 24),
    "ticket": ("The ticket.", None),
    "DeletionAccepted.status": ("Always `deletion_requested`.", "deletion_requested"),
    "DeletionAccepted.detail": ("What happens next, for a person.",
                                ("Your account is closed; your photos, models and images are "
                                "being erased.")),
    "JobState.status": ("queued, running, succeeded, failed or cancelled.", "running"),
    "TrainingStatus.status": ("queued, running, succeeded, failed or cancelled.", "running"),
    "ModelView.status": ("training, ready, failed or cancelled.", "ready"),
    "DatasetModel.status": ("training, ready, failed or cancelled.", "ready"),
    "ImageView.model": ("The base model that drew it.", "schnell"),
    "ModelView.steps": ("Training steps.", 1000),
    "TrainingStatus.detail": ("What the training is doing, for a person.", "step 40/1000"),
    "JobState.type": ("Always `job.state.v1`.", "job.state.v1"),
    "JobState.detail": ("What the job is doing, for a person.", None),
    "JobError.code": ("The failure code.", "out_of_memory"),
    "JobState.ending": ("Internal; not sent.", None),
    "UploadedImage.id": ("The photo's id in the set.", "7596238c0a1b4c2d8e9f0a1b2c3d4e5f"),
    "User.id": ("The user's id.", "00d609cc4b3a4f2e9d8c7b6a5f4e3d2c"),
    "Tokens.user": ("The account.", None),
    # notifications (contracts.notifications' views)
    "WebPushView.id": ("The subscription's id.", "3f9a0c2b7d1e4f5a6b8c9d0e"),
    "DeviceView.id": ("The device's id.", "8b1c2d3e4f5a6b7c8d9e0f1a"),
    "WebhookView.id": ("The webhook's id.", "5e6f7a8b9c0d1e2f3a4b5c6d"),
    "language": ("The language of its notifications: `en` or `fr`.", "en"),
    "enabled": ("False once it was disabled (it kept failing, or you paused it).", True),
    "disabled_at": ("When it was disabled; null while enabled.", None),
    "disabled_reason": ("Why it was disabled, for a person; null while enabled.", None),
    "platform": ("What the app runs on: `ios`, `android` or `web`.", "ios"),
    "provider": ("Who delivers to it: `expo` or `fcm`.", "expo"),
    "WebhookView.url": ("Where it is sent.", "https://example.com/terra/webhook"),
    "WebhookView.events": (("Only these events; null: every event your preferences send to "
                           "webhooks."), ["training.completed", "generation.completed"]),
    "WebhookView.description": ("Your note.", "production server"),
    "secret_rotated_at": ("When its secret was last rotated; null if never.", None),
    "previous_secret_expires_at": (("Until when the secret before the last rotation still "
                                   "signs beside the new one; null if none does."), None),
    "PreferencesView.events": (("Every event, with the channels that notify it (defaults "
                               "included)."), {"training.completed": ["web_push", "webhook"],
                                              "prompt.optimized": []}),
    "DeliveryView.id": ("The delivery's id: the `webhook-id` header it is sent with.",
                        "7c0e1d2f3a4b5c6d7e8f9a0b1c2d3e4f"),
    "DeliveryView.event": (("What it reports: an event such as `training.completed`, or "
                           "`webhook.test`."), "training.completed"),
    "event_id": ("The message id of the event it reports.", "0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d"),
    "DeliveryView.state": (("`pending` (its next attempt is due at `next_attempt_at`), "
                           "`delivered`, `failed` (attempts spent, or refused for good) or "
                           "`dropped` (the webhook was gone or disabled)."), "delivered"),
    "DeliveryView.attempts": ("Each attempt, the oldest first.", None),
    "next_attempt_at": ("When it is tried next; null unless pending.", None),
    "delivered_at": ("When the receiver answered 2xx; null until then.", None),
    "Attempt.at": ("When it was sent.", "2026-11-25T19:57:21.620648Z"),
    "Attempt.status_code": (("The receiver's HTTP status; null when none came (a timeout, a "
                            "refused connection)."), 500),
    "Attempt.error": ("What went wrong, for a person; null on success.", "HTTP 500"),
    "Attempt.duration_ms": ("How long it took, in milliseconds.", 184),
    "WebPushKeys.p256dh": ("The browser's P-256 public key, base64url (65 bytes).",
                           ("BN4gp7vdfFxAbq0jeCzFj8cZwjT_VVEECF8pNjygKQmn5jqGPlnFinJAoa2g2QHU-"
                           "DRkX1CS8SO92lygp_gvcO4")),
    "WebPushKeys.auth": ("The browser's authentication secret, base64url (16 bytes).",
                         "rxEUNEjPWKjmVfJ2FcIRRg"),
    "WebhookPayload.type": ("What happened: an event, or `webhook.test`.", "training.completed"),
    "WebhookPayload.timestamp": ("When the event happened (ISO 8601, UTC).",
                                 "2026-11-25T19:57:21.620648Z"),
    "WebhookPayload.data": ("What happened: the ids and the deep link.", None),
    "image_ids": ("The images it made.", ["9a8b7c6d5e4f4a3b2c1d0e9f8a7b6c5d"]),
    "deep_link": ("A path of the app that shows it (`/models/<id>`, `/images/<id>`, ...).",
                  "/models/5b7e0c2a9d4f4e3b8a1c6d2e0f9a7b3c"),
    "WebhookData.reason": ("Why the job failed, for a person; null unless it failed.", None),
    "WebhookData.prompt": ("`prompt.optimized`: the optimised prompt.", None),
}

SCHEMA_DOCS: dict[str, str] = {
    "JobKind": "The kind of job.",
    "JobStatus": "Where a job is in its life.",
    "FailureCode": "Why a job failed.",
    "Provider": "A way to sign in.",
    "ChangeKind": "What a change to the prompt did.",
    "PromptDecision": "What was kept of an optimised prompt.",
    "Body_upload_api_training_upload_post": "A multipart form with the photos as `files`.",
    "ModelStatus": "Where a model is in its life.",
    "PromptChange": "One change the optimiser made, and why.",
    "TokenCounts": "How many tokens each FLUX text encoder reads.",
    "Channel": "How a notification reaches you: `web_push` (browsers), `mobile_push` "
               "(phones, through Expo or FCM), `webhook` (your servers).",
    "DeliveryState": "Where a delivery is: `pending`, `delivered`, `failed` or `dropped`.",
    "Language": "The language of a target's notifications.",
    "Platform": "What a device's app runs on.",
    "PushProvider": "Who delivers to a device: Expo push or Firebase Cloud Messaging.",
}


# Plain views in the routers with no docstring: what each one is.
MODEL_DOCS: dict[str, str] = {
    "Tokens": "The account and a fresh token pair.",
    "DeletionAccepted": "The account is closed; its data is being erased.",
    "RegisterBody": "A new account.",
    "LoginBody": "Either `email` and `password`, or `google_id_token`.",
    "RefreshBody": "A refresh token to exchange for a new pair.",
    "LogoutBody": "The session to end (or every session, with `everywhere`).",
    "OptimizeBody": "A prompt to optimise.",
    "AcceptBody": "What you kept of the optimised prompt.",
    "StartBody": "A training of a LoRA on one of your photo sets.",
    "Started": "The training is queued.",
    "TrainingStatus": "A training's state.",
    "UploadedImage": "A stored photo.",
    "Uploaded": "The stored photo set.",
    "DatasetModel": "A model trained on a photo set.",
    "DatasetView": "A photo set.",
    "ModelView": "A LoRA model of yours.",
    "GenerateBody": "A generation request.",
    "Queued": "The generation is queued.",
    "ImageView": "A generated image.",
    "JobError": "Why a job failed.",
    "ChangePasswordBody": "Your current password and the new one.",
    "ClientConfig": "What a client app needs to know about this deployment.",
    "DatasetItem": "A photo set of yours.",
    "ImageItem": "A generated image of yours.",
    "JobItem": "A job of yours.",
    "ModelItem": "A LoRA model of yours.",
    "WsTicket": "A single-use WebSocket ticket.",
    "WebPushView": "A browser's Web Push subscription.",
    "DeviceView": "A phone's (or app's) push token, shown by its last characters.",
    "PreferencesView": "Which channels notify which event.",
    "WebhookView": "A webhook of yours (its secret is never shown again).",
    "DeliveryView": "One event sent to one webhook, with its attempts.",
    "Attempt": "One try at a delivery.",
    "WebPushKeys": "A browser subscription's encryption keys (RFC 8291), base64url.",
}


API_DESCRIPTION = """\
Terra's REST API and WebSockets. Errors are RFC 9457 problem documents
(`application/problem+json`, the `Problem` schema): `type` names the problem, and each
operation lists the statuses it can answer. A 503 is always temporary (`Retry-After`); a
job request retried with the same `Idempotency-Key` names the same job. Requests whose head
is too large are answered 431 before they reach a route.

## WebSockets

Events of your jobs arrive on one socket: `/ws` (every domain) or `/ws/prompt`,
`/ws/training`, `/ws/generate` (one each). Their frames are described in AsyncAPI:
[`/asyncapi/websocket.json`](/asyncapi/websocket.json).

**Authenticate** with `?ticket=<ticket>` (a single-use ticket from `POST /api/ws/ticket`,
so no token goes in a URL), an `Authorization: Bearer <access token>` header, or
`?token=<access token>` (older clients).

**Frames from the server.** Events: `{"seq", "type", "job_id", "domain", "payload"}`, where
`seq` is the event's stream sequence and `payload` the event (`type` such as
`generation.progressed.v1`). Control frames have no `seq`: `{"type": "ready", "last_seq",
"replayed"}` once the replay is done, and `{"type": "pong"}` answering a client's
`{"type": "ping"}`.

**Missing nothing.** Reconnect with `?since=<the last seq you saw>`: the events after it
are replayed, then `ready`, then live events, with no gap and no duplicate (`since=0`:
everything still kept, 7 days).

**Close codes.**

| code | why | what to do |
| --- | --- | --- |
| 4401 | a missing, bad, expired or revoked token, or an unknown, used or expired ticket (reason `revoked`: the account was deleted or signed out everywhere) | sign in again |
| 4440 | the token expired while the socket was open | refresh, reconnect with `since=<last seq>` |
| 4408 | too slow: the client fell behind | reconnect with `since=<last seq>` |
| 4400 | a bad query (`since=x`) | fix the URL |
| 1013 | the ticket could not be checked right now | try again shortly |
"""
