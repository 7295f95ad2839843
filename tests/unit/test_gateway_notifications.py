"""The notification and webhook routes over a stand-in notifier_service: the real app and
the real `NotifierClient`, whose broker hands each request to an in-memory notifier that
answers as the contract says (the caller's records only, refusals naming their field). No
servers: tests/e2e runs the same routes against the real service."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Header
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import TypeAdapter

from contracts.base import utcnow
from contracts.ids import new_id
from contracts.notifications import (
    DEFAULT_PREFERENCES,
    DeliveryList,
    DeliveryQueued,
    DeliveryState,
    DeliveryView,
    DeviceAdded,
    DeviceView,
    NotifierDone,
    NotifierErrorCode,
    NotifierFailure,
    PreferencesReply,
    PreferencesView,
    Targets,
    WebhookList,
    WebhookReply,
    WebhookView,
    WebPushAdded,
    WebPushKey,
    WebPushView,
)
from contracts.notifications import REQUESTS as NOTIFIER_REQUESTS
from contracts.topology import NotifierRpc
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.deps import get_caller
from gateway.notifier_client import _STATUS, NotifierClient
from gateway.security import Caller, TokenVerifier

REQUESTS = NOTIFIER_REQUESTS
LIMIT = 2  # targets of each kind per user
P256DH = "BN4gp7vdfFxAbq0jeCzFj8cZwjT_VVEECF8pNjygKQmn5jqGPlnFinJAoa2g2QHU-DRkX1CS8SO92lygp_gvcO4"
AUTH = "rxEUNEjPWKjmVfJ2FcIRRg"


class Refused(Exception):
    def __init__(self, code: NotifierErrorCode, detail: str, field: str | None = None):
        super().__init__(detail)
        self.failure = NotifierFailure(code=code, detail=detail, field=field)


def not_found(what: str) -> Refused:
    return Refused(NotifierErrorCode.NOT_FOUND, f"No {what} of yours with this id.")


class FakeNotifier:
    """notifier_service's answers, kept per user: another user's id is not found."""

    def __init__(self) -> None:
        self.requests: list = []
        self.web_push: dict[tuple[str, str], tuple[str, WebPushView]] = {}
        self.devices: dict[tuple[str, str], tuple[str, DeviceView]] = {}
        self.webhooks: dict[tuple[str, str], tuple[WebhookView, str]] = {}
        self.deliveries: dict[tuple[str, str], list[DeliveryView]] = {}
        self.preferences: dict[str, dict] = {}
        self.silent: type[Exception] | None = None  # raised instead of an answer

    def answer(self, subject: str, body: bytes):
        request = REQUESTS[NotifierRpc(subject)].model_validate_json(body)
        self.requests.append(request)
        try:
            return getattr(self, type(request).__name__)(request)
        except Refused as refused:
            return refused.failure

    # --- web push and devices

    def GetWebPushKey(self, request):  # named after the request it answers
        return WebPushKey(public_key="BNcR-key")

    def AddWebPush(self, request):
        if not request.endpoint.startswith("https://"):
            raise Refused(NotifierErrorCode.INVALID_REQUEST, "The endpoint must be https.",
                          "endpoint")
        mine = {k: v for k, v in self.web_push.items() if k[0] == request.user_id}
        for endpoint, view in mine.values():
            if endpoint == request.endpoint:
                return WebPushAdded(subscription=view, created=False)
        if len(mine) >= LIMIT:
            raise Refused(NotifierErrorCode.LIMIT_REACHED, "Too many subscriptions.",
                          "endpoint")
        view = WebPushView(id=new_id(), endpoint_origin="https://push.example",
                           language=request.language, created_at=utcnow(), enabled=True)
        self.web_push[(request.user_id, view.id)] = (request.endpoint, view)
        return WebPushAdded(subscription=view, created=True)

    def RemoveWebPush(self, request):
        if self.web_push.pop((request.user_id, request.subscription_id), None) is None:
            raise not_found("subscription")
        return NotifierDone()

    def AddDevice(self, request):
        mine = {k: v for k, v in self.devices.items() if k[0] == request.user_id}
        for token, view in mine.values():
            if token == request.token:
                return DeviceAdded(device=view, created=False)
        if len(mine) >= LIMIT:
            raise Refused(NotifierErrorCode.LIMIT_REACHED, "Too many devices.", "token")
        view = DeviceView(id=new_id(), platform=request.platform, provider=request.provider,
                          token_hint=request.token[-6:], language=request.language,
                          created_at=utcnow(), enabled=True)
        self.devices[(request.user_id, view.id)] = (request.token, view)
        return DeviceAdded(device=view, created=True)

    def RemoveDevice(self, request):
        if self.devices.pop((request.user_id, request.device_id), None) is None:
            raise not_found("device")
        return NotifierDone()

    def _preferences(self, user_id: str) -> PreferencesView:
        chosen = self.preferences.get(user_id, {})
        return PreferencesView(events={event: list(chosen.get(event, channels))
                                       for event, channels in DEFAULT_PREFERENCES.items()})

    def ListTargets(self, request):
        user = request.user_id
        return Targets(
            web_push=[view for (u, _), (_, view) in self.web_push.items() if u == user],
            devices=[view for (u, _), (_, view) in self.devices.items() if u == user],
            preferences=self._preferences(user))

    def SetPreferences(self, request):
        self.preferences.setdefault(request.user_id, {}).update(request.events)
        return PreferencesReply(preferences=self._preferences(request.user_id))

    # --- webhooks

    def _webhook(self, request) -> WebhookView:
        found = self.webhooks.get((request.user_id, request.webhook_id))
        if found is None:
            raise not_found("webhook")
        return found[0]

    def CreateWebhook(self, request):
        if "10.0.0.1" in request.url:
            raise Refused(NotifierErrorCode.INVALID_REQUEST,
                          "The URL reaches a private address.", "url")
        if sum(u == request.user_id for u, _ in self.webhooks) >= LIMIT:
            raise Refused(NotifierErrorCode.LIMIT_REACHED, "Too many webhooks.", "url")
        view = WebhookView(id=new_id(), url=request.url, events=request.events,
                           description=request.description, language="en",
                           created_at=utcnow(), enabled=True)
        secret = f"whsec_{new_id()}"
        self.webhooks[(request.user_id, view.id)] = (view, secret)
        return WebhookReply(webhook=view, secret=secret)

    def ListWebhooks(self, request):
        return WebhookList(webhooks=[view for (u, _), (view, _) in self.webhooks.items()
                                     if u == request.user_id])

    def GetWebhook(self, request):
        return WebhookReply(webhook=self._webhook(request))

    def UpdateWebhook(self, request):
        view = self._webhook(request)
        changes = {name: value for name in ("url", "events", "description", "enabled")
                   if (value := getattr(request, name)) is not None}
        if request.all_events:
            changes["events"] = None
        view = view.model_copy(update=changes)
        self.webhooks[(request.user_id, request.webhook_id)] = (
            view, self.webhooks[(request.user_id, request.webhook_id)][1])
        return WebhookReply(webhook=view)

    def DeleteWebhook(self, request):
        self._webhook(request)
        del self.webhooks[(request.user_id, request.webhook_id)]
        return NotifierDone()

    def RotateWebhookSecret(self, request):
        view = self._webhook(request)
        secret = f"whsec_{new_id()}"
        self.webhooks[(request.user_id, request.webhook_id)] = (view, secret)
        return WebhookReply(webhook=view, secret=secret)

    def TestWebhook(self, request):  # answers `SendTestEvent`
        self._webhook(request)
        delivery = DeliveryView(id=new_id(), event="webhook.test", event_id=new_id(),
                                state=DeliveryState.PENDING, attempts=[], created_at=utcnow())
        self.deliveries.setdefault((request.user_id, request.webhook_id), []).insert(
            0, delivery)
        return DeliveryQueued(delivery_id=delivery.id)

    def RedeliverWebhook(self, request):
        self._webhook(request)
        ids = [d.id for d in self.deliveries.get((request.user_id, request.webhook_id), [])]
        if request.delivery_id not in ids:
            raise not_found("delivery")
        return DeliveryQueued(delivery_id=request.delivery_id)

    def ListDeliveries(self, request):
        self._webhook(request)
        return DeliveryList(deliveries=self.deliveries.get(
            (request.user_id, request.webhook_id), []))


class FakeBroker:
    """The broker as `NotifierClient` uses it: `request` answers from the fake notifier."""

    def __init__(self, notifier: FakeNotifier) -> None:
        self.notifier = notifier

    async def request(self, body: bytes, subject: str, *, correlation_id: str, timeout: float):
        if self.notifier.silent is not None:
            raise self.notifier.silent()
        reply = self.notifier.answer(subject, body)
        return SimpleNamespace(body=reply.model_dump_json().encode())


async def caller_from_header(x_user: str = Header(default="alice")) -> Caller:
    return Caller(user_id=x_user, email=None, token_id=None)


@asynccontextmanager
async def serving(notifier: FakeNotifier, *, as_header_user: bool = True):
    settings = GatewaySettings()
    parts = SimpleNamespace(settings=settings, notifier=NotifierClient(FakeBroker(notifier), 1.0),
                            token_verifier=TokenVerifier(auth=None))

    @asynccontextmanager
    async def over_fakes(_settings):
        yield parts

    app = create_app(settings, parts_from=over_fakes)
    if as_header_user:
        app.dependency_overrides[get_caller] = caller_from_header
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
async def http(notifier):
    async with serving(notifier) as client:
        yield client


def subscription(endpoint: str = "https://push.example/send/abc", **extra) -> dict:
    return {"endpoint": endpoint, "expirationTime": None,
            "keys": {"p256dh": P256DH, "auth": AUTH}, **extra}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/" + slug) and body["status"] == status
    return body


def field_of(response: httpx.Response) -> str:
    [error] = response.json()["errors"]
    assert error["location"] == "body"
    return error["field"]


# --- the refusals' table --------------------------------------------------------------------


@pytest.mark.parametrize("code", list(NotifierErrorCode))
def test_every_refusal_has_its_own_answer(code):
    """A code missing from the table would be answered 503, as if the notifier were down."""
    assert code in _STATUS


# --- web push --------------------------------------------------------------------------------


async def test_the_vapid_key_is_served(http):
    response = await http.get("/api/notifications/webpush/key")
    assert response.status_code == 200 and response.json() == {"public_key": "BNcR-key"}


async def test_a_browser_subscribes_once_per_endpoint_and_unsubscribes(http, notifier):
    first = await http.post("/api/notifications/webpush", json=subscription(language="fr"))
    assert first.status_code == 201, first.text
    view = first.json()["subscription"]
    assert first.json()["created"] is True and view["language"] == "fr"
    [sent] = notifier.requests
    assert sent.user_id == "alice" and sent.keys.p256dh == P256DH  # from the token only

    again = await http.post("/api/notifications/webpush", json=subscription())
    assert again.status_code == 200 and again.json() == {"subscription": view,
                                                         "created": False}

    listed = (await http.get("/api/notifications")).json()
    assert [s["id"] for s in listed["web_push"]] == [view["id"]]
    assert (await http.delete(f"/api/notifications/webpush/{view['id']}")).status_code == 204
    assert (await http.get("/api/notifications")).json()["web_push"] == []


async def test_malformed_subscriptions_are_422_naming_the_field(http, notifier):
    short_key = subscription()
    short_key["keys"]["p256dh"] = "abc"
    response = await http.post("/api/notifications/webpush", json=short_key)
    assert_problem(response, 422, "validation-error")
    assert field_of(response) == "keys.p256dh"
    unknown = await http.post("/api/notifications/webpush", json=subscription(extra=1))
    assert field_of(unknown) == "extra"
    assert notifier.requests == []  # refused before the notifier was asked

    # The notifier's own checks (a URL it refuses) read the same way.
    plain = await http.post("/api/notifications/webpush",
                            json=subscription("http://push.example/x"))
    body = assert_problem(plain, 422, "validation-error")
    assert field_of(plain) == "endpoint" and body["code"] == "invalid_request"


async def test_too_many_subscriptions_is_409_naming_the_field(http):
    for n in range(LIMIT):
        response = await http.post("/api/notifications/webpush",
                                   json=subscription(f"https://push.example/{n}"))
        assert response.status_code == 201
    full = await http.post("/api/notifications/webpush",
                           json=subscription("https://push.example/more"))
    body = assert_problem(full, 409, "limit-reached")
    assert field_of(full) == "endpoint" and body["code"] == "limit_reached"


# --- devices and preferences --------------------------------------------------------------


async def test_a_device_registers_once_per_token_and_is_removed(http, notifier):
    device = {"token": "ExponentPushToken[abcdefghij]", "platform": "ios", "provider": "expo"}
    first = await http.post("/api/notifications/devices", json=device)
    assert first.status_code == 201 and first.json()["created"] is True
    view = first.json()["device"]
    assert view["token_hint"] == "fghij]"
    assert "token" not in view
    again = await http.post("/api/notifications/devices", json=device)
    assert again.status_code == 200 and again.json()["device"]["id"] == view["id"]

    listed = (await http.get("/api/notifications")).json()
    assert [d["id"] for d in listed["devices"]] == [view["id"]]
    assert (await http.delete(f"/api/notifications/devices/{view['id']}")).status_code == 204


async def test_bad_devices_are_422_and_too_many_409(http):
    bad = await http.post("/api/notifications/devices",
                          json={"token": "t", "platform": "ios", "provider": "apns"})
    assert_problem(bad, 422, "validation-error")
    assert field_of(bad) == "provider"
    for n in range(LIMIT):
        await http.post("/api/notifications/devices",
                        json={"token": f"t{n}", "platform": "android", "provider": "fcm"})
    full = await http.post("/api/notifications/devices",
                           json={"token": "t9", "platform": "android", "provider": "fcm"})
    assert_problem(full, 409, "limit-reached")
    assert field_of(full) == "token"


async def test_preferences_are_set_and_listed_with_their_defaults(http, notifier):
    listed = (await http.get("/api/notifications")).json()["preferences"]["events"]
    assert listed["prompt.optimized"] == [] and "webhook" in listed["training.completed"]
    response = await http.put("/api/notifications/preferences",
                              json={"events": {"prompt.optimized": ["web_push"],
                                               "generation.failed": []}})
    assert response.status_code == 200, response.text
    events = response.json()["events"]
    assert events["prompt.optimized"] == ["web_push"] and events["generation.failed"] == []
    assert notifier.requests[-1].user_id == "alice"

    unknown = await http.put("/api/notifications/preferences",
                             json={"events": {"training.started": ["web_push"]}})
    assert_problem(unknown, 422, "validation-error")
    assert unknown.json()["errors"][0]["field"].startswith("events.training.started")
    channel = await http.put("/api/notifications/preferences",
                             json={"events": {"training.completed": ["pigeon"]}})
    assert channel.json()["errors"][0]["field"] == "events.training.completed.0"


# --- webhooks --------------------------------------------------------------------------------


async def create(http, url: str = "https://example.com/hook", user: str = "alice", **body):
    return await http.post("/api/webhooks", json={"url": url, **body},
                           headers={"x-user": user})


async def test_the_secret_is_shown_when_created_or_rotated_only(http):
    created = await create(http, events=["training.completed"], description="prod")
    assert created.status_code == 201, created.text
    secret, webhook = created.json()["secret"], created.json()["webhook"]
    assert secret.startswith("whsec_") and webhook["events"] == ["training.completed"]
    hook = webhook["id"]

    for path in ("/api/webhooks", f"/api/webhooks/{hook}"):
        answer = await http.get(path)
        assert answer.status_code == 200 and secret not in answer.text
        assert "secret\"" not in answer.text
    patched = await http.patch(f"/api/webhooks/{hook}", json={"description": "staging"})
    assert patched.status_code == 200 and secret not in patched.text
    assert patched.json()["description"] == "staging"

    rotated = await http.post(f"/api/webhooks/{hook}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != secret
    assert rotated.json()["webhook"]["id"] == hook


async def test_patch_events_null_means_every_event_again(http, notifier):
    hook = (await create(http, events=["training.completed"])).json()["webhook"]["id"]
    kept = await http.patch(f"/api/webhooks/{hook}", json={"enabled": False})
    assert kept.json()["events"] == ["training.completed"] and kept.json()["enabled"] is False
    assert notifier.requests[-1].all_events is False
    every = await http.patch(f"/api/webhooks/{hook}", json={"events": None})
    assert every.status_code == 200 and every.json()["events"] is None
    assert notifier.requests[-1].all_events is True


async def test_test_events_deliveries_and_redelivery(http):
    hook = (await create(http)).json()["webhook"]["id"]
    queued = await http.post(f"/api/webhooks/{hook}/test")
    assert queued.status_code == 202
    delivery = queued.json()["delivery_id"]
    listed = await http.get(f"/api/webhooks/{hook}/deliveries")
    assert [d["id"] for d in listed.json()["deliveries"]] == [delivery]
    assert listed.json()["deliveries"][0]["event"] == "webhook.test"
    again = await http.post(f"/api/webhooks/{hook}/deliveries/{delivery}/redeliver")
    assert again.status_code == 202 and again.json() == {"delivery_id": delivery}
    missing = await http.post(f"/api/webhooks/{hook}/deliveries/{new_id()}/redeliver")
    assert_problem(missing, 404, "not-found")
    assert (await http.delete(f"/api/webhooks/{hook}")).status_code == 204
    assert_problem(await http.get(f"/api/webhooks/{hook}"), 404, "not-found")


async def test_another_users_ids_are_not_found_everywhere(http):
    hook = (await create(http)).json()["webhook"]["id"]
    sub = (await http.post("/api/notifications/webpush",
                           json=subscription())).json()["subscription"]["id"]
    device = (await http.post("/api/notifications/devices", json={
        "token": "t", "platform": "ios", "provider": "expo"})).json()["device"]["id"]
    delivery = (await http.post(f"/api/webhooks/{hook}/test")).json()["delivery_id"]
    bob = {"x-user": "bob"}
    for method, path, body in (
            ("GET", f"/api/webhooks/{hook}", None),
            ("PATCH", f"/api/webhooks/{hook}", {"enabled": True}),
            ("DELETE", f"/api/webhooks/{hook}", None),
            ("POST", f"/api/webhooks/{hook}/rotate-secret", None),
            ("POST", f"/api/webhooks/{hook}/test", None),
            ("POST", f"/api/webhooks/{hook}/deliveries/{delivery}/redeliver", None),
            ("GET", f"/api/webhooks/{hook}/deliveries", None),
            ("DELETE", f"/api/notifications/webpush/{sub}", None),
            ("DELETE", f"/api/notifications/devices/{device}", None)):
        response = await http.request(method, path, json=body, headers=bob)
        assert_problem(response, 404, "not-found")
    listed = (await http.get("/api/notifications", headers=bob)).json()
    assert listed["web_push"] == [] and listed["devices"] == []
    assert (await http.get("/api/webhooks", headers=bob)).json() == {"webhooks": []}
    assert (await http.get(f"/api/webhooks/{hook}")).status_code == 200  # still alice's


async def test_bad_webhooks_are_422_naming_the_field_and_too_many_409(http, notifier):
    for body, field in (({"url": "https://x.example", "events": ["job.done"]}, "events.0"),
                        ({"url": "https://x.example", "secret": "mine"}, "secret"),
                        ({"url": "x" * 3000}, "url"),
                        ({"url": "https://x.example", "description": "d" * 201},
                         "description")):
        response = await http.post("/api/webhooks", json=body)
        assert_problem(response, 422, "validation-error")
        assert field_of(response) == field, body
    assert notifier.requests == []
    private = await create(http, "https://10.0.0.1/hook")
    assert_problem(private, 422, "validation-error")
    assert field_of(private) == "url"

    for n in range(LIMIT):
        assert (await create(http, f"https://example.com/{n}")).status_code == 201
    full = await create(http, "https://example.com/more")
    assert_problem(full, 409, "limit-reached")
    assert field_of(full) == "url"


@pytest.mark.parametrize("path", ["/api/webhooks/a.b", "/api/webhooks/*",
                                  "/api/notifications/devices/" + "x" * 65,
                                  "/api/webhooks/ok/deliveries/a%3Eb/redeliver"])
async def test_ids_that_are_no_ids_are_422_before_the_notifier_is_asked(http, notifier, path):
    method = "POST" if path.endswith("redeliver") else (
        "DELETE" if "devices" in path else "GET")
    response = await http.request(method, path)
    assert_problem(response, 422, "validation-error")
    assert response.json()["errors"][0]["location"] == "path"
    assert notifier.requests == []


# --- no answer -------------------------------------------------------------------------------


@pytest.mark.parametrize("silence", [NatsTimeout, NoRespondersError, TimeoutError])
@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/notifications/webpush/key", None),
    ("POST", "/api/notifications/webpush", subscription()),
    ("POST", "/api/notifications/devices", {"token": "t", "platform": "ios",
                                            "provider": "expo"}),
    ("GET", "/api/notifications", None),
    ("PUT", "/api/notifications/preferences", {"events": {}}),
    ("POST", "/api/webhooks", {"url": "https://example.com/hook"}),
    ("GET", "/api/webhooks", None),
    ("POST", "/api/webhooks/abc/test", None),
])
async def test_a_notifier_that_does_not_answer_is_a_503_with_retry_after(
        http, notifier, silence, method, path, body):
    notifier.silent = silence
    response = await http.request(method, path, json=body)
    problem = assert_problem(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert "notification service" in problem["detail"]


async def test_the_notifiers_own_unavailable_is_a_503_too(http, notifier):
    notifier.GetWebPushKey = lambda request: NotifierFailure(
        code=NotifierErrorCode.UNAVAILABLE, detail="No VAPID key yet.")
    response = await http.get("/api/notifications/webpush/key")
    assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"]


async def test_every_route_needs_an_access_token(notifier):
    async with serving(notifier, as_header_user=False) as http:
        for method, path in (("GET", "/api/notifications"), ("GET", "/api/webhooks"),
                             ("POST", "/api/webhooks"),
                             ("GET", "/api/notifications/webpush/key")):
            response = await http.request(method, path)
            assert_problem(response, 401, "unauthorized")
    assert notifier.requests == []


async def test_requests_carry_the_correlation_id(http, notifier):
    await http.get("/api/webhooks", headers={"x-request-id": "req-42"})
    [sent] = notifier.requests
    assert sent.correlation_id == "req-42"


def test_replies_parse_by_their_type_only():
    """A failure is told from a success by `type`: the client's union never confuses them."""
    from gateway.notifier_client import _or_failure

    adapter = TypeAdapter(_or_failure(WebhookReply))
    failure = NotifierFailure(code=NotifierErrorCode.NOT_FOUND, detail="x")
    assert isinstance(adapter.validate_json(failure.model_dump_json()), NotifierFailure)
    assert json.loads(failure.model_dump_json())["type"] == "notify.failure.v1"
