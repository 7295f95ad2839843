"""Local stand-ins for the services notifier_service talks to: a Web Push service, Expo's
push API, FCM HTTP v1 (with its OAuth2 token endpoint) and a webhook receiver.

Each is an aiohttp server on 127.0.0.1 (a free port), started and stopped inside the
running event loop (`async with WebhookReceiver() as hooks: ...`). Each records what it
was sent (`requests`, `wait_for(n)`) and answers what the test scripted, so tests and the
bench can check the requests over real HTTP and make a target fail, slow down or vanish.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

LOOPBACK = "127.0.0.1"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# google-auth signs every service-account assertion for Google's token endpoint, whatever
# `token_uri` the request is posted to.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Recorded:
    """One request a stand-in received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float = field(default_factory=time.time)  # wall clock, for latencies

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """A scripted answer: the status, and optionally a `Retry-After`, a delay before
    answering (a slow target), a `Location` (a redirect) and a body."""

    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    location: str | None = None
    body: bytes = b""


class _StandIn:
    """An aiohttp app on a free loopback port that records every request."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""  # http://127.0.0.1:<port>, once started

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        self._routes(app)
        # No access log: a bench sends thousands of requests. A scripted slow answer is
        # not waited for on stop.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{LOOPBACK}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _record(self, request: web.Request) -> Recorded:
        recorded = Recorded(
            method=request.method, path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.read())
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        return recorded

    def received(self, path: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if path is None or r.path == path]

    async def wait_for(self, count: int, *, path: str | None = None,
                       timeout: float = 10.0) -> list[Recorded]:
        """The first `count` requests (to `path`, when given), once they have arrived
        (`TimeoutError` otherwise)."""
        async def enough() -> list[Recorded]:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.received(path)) >= count)
                return self.received(path)[:count]

        return await asyncio.wait_for(enough(), timeout)


class _Scripted(_StandIn):
    """Answers per path: the scripted replies in order, then the default one."""

    def __init__(self, default: Reply) -> None:
        super().__init__()
        self.default = default
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._always: dict[str, Reply] = {}

    def script(self, path: str, *replies: Reply | int) -> None:
        """The next answers to `path` (a status alone is a `Reply` with that status)."""
        self._scripts[path].extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def always(self, path: str, reply: Reply | int) -> None:
        """Every answer to `path` once its script is spent."""
        self._always[path] = reply if isinstance(reply, Reply) else Reply(reply)

    def _next_reply(self, path: str) -> Reply:
        queued = self._scripts.get(path)
        if queued:
            return queued.popleft()
        return self._always.get(path, self.default)


async def answer(reply: Reply) -> web.Response:
    """The response a scripted `Reply` describes, after its delay."""
    if reply.delay_s:
        await asyncio.sleep(reply.delay_s)
    headers = {}
    if reply.retry_after is not None:
        headers["Retry-After"] = reply.retry_after
    if reply.location is not None:
        headers["Location"] = reply.location
    return web.Response(status=reply.status, body=reply.body, headers=headers)


# --- Web Push ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebPushClientKeys:
    """What a browser keeps for one subscription: an ECDH P-256 key pair and a 16-byte
    auth secret; `p256dh` and `auth` are the base64url strings `PushSubscription` gives."""

    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @classmethod
    def generate(cls) -> WebPushClientKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64url(self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def subscription(self, endpoint: str) -> dict:
        """The browser's `PushSubscription.toJSON()`."""
        return {"endpoint": endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def decrypt(self, body: bytes) -> bytes:
        return decrypt(body, self.private_key, self.auth_secret)


def decrypt(body: bytes, private_key: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """A Web Push body (RFC 8291, aes128gcm) as the browser reads it."""
    return http_ece.decrypt(body, private_key=private_key, auth_secret=auth_secret,
                            version="aes128gcm")


def verify_vapid(authorization: str) -> tuple[dict, str]:
    """(claims, public key) of a VAPID `Authorization: vapid t=<jwt>, k=<key>` header once
    the JWT's ES256 signature verifies with the key it names and it has not expired
    (`jwt.InvalidTokenError` otherwise). The caller checks `aud`, `sub` and the key."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise jwt.InvalidTokenError(f"not a vapid authorization: {scheme!r}")
    parts = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b64url_decode(parts["k"]))
    claims = jwt.decode(parts["t"], public_key, algorithms=["ES256"],
                        options={"verify_aud": False, "require": ["exp", "aud", "sub"]})
    return claims, parts["k"]


class WebPushReceiver(_Scripted):
    """A push service: `POST /push/<name>` answers 201 unless scripted (e.g. 410 for a
    subscription the browser dropped). `endpoint(name)` is a subscription's endpoint."""

    def __init__(self, default: Reply = Reply(201)) -> None:
        super().__init__(default)

    def endpoint(self, name: str) -> str:
        return f"{self.url}{self.path(name)}"

    @staticmethod
    def path(name: str) -> str:
        return f"/push/{name}"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/push/{name}", self._push)

    async def _push(self, request: web.Request) -> web.Response:
        await self._record(request)
        return await answer(self._next_reply(request.path))


# --- Expo --------------------------------------------------------------------------------


class ExpoStandIn(_StandIn):
    """Expo's push API: `send_url` answers one ticket per message, `receipts_url` the
    receipts of tickets it gave. `fail_ticket(token, code)` makes sends to a token fail
    at once; `fail_receipt(token, code)` gives an ok ticket whose receipt later fails
    (`DeviceNotRegistered` by default, as a phone that uninstalled the app). With
    `access_token` set, requests without that bearer are answered 401."""

    SEND_PATH = "/--/api/v2/push/send"
    RECEIPTS_PATH = "/--/api/v2/push/getReceipts"

    def __init__(self, access_token: str | None = None) -> None:
        super().__init__()
        self.access_token = access_token
        self.ticket_errors: dict[str, str] = {}
        self.receipt_errors: dict[str, str] = {}
        self.statuses: deque[Reply] = deque()  # scripted HTTP answers to sends, in order
        self.tickets: dict[str, str] = {}  # ticket id -> token
        self.messages: list[dict] = []

    @property
    def send_url(self) -> str:
        return self.url + self.SEND_PATH

    @property
    def receipts_url(self) -> str:
        return self.url + self.RECEIPTS_PATH

    def fail_ticket(self, token: str, code: str = "DeviceNotRegistered") -> None:
        self.ticket_errors[token] = code

    def fail_receipt(self, token: str, code: str = "DeviceNotRegistered") -> None:
        self.receipt_errors[token] = code

    def script(self, *replies: Reply | int) -> None:
        """HTTP answers to the next sends (before any ticket is made)."""
        self.statuses.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def _routes(self, app: web.Application) -> None:
        app.router.add_post(self.SEND_PATH, self._send)
        app.router.add_post(self.RECEIPTS_PATH, self._receipts)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.access_token and (request.headers.get("Authorization")
                                  != f"Bearer {self.access_token}"):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message":
                                                  "bad access token"}]}, status=401)
        return None

    async def _send(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._unauthorized(request)) is not None:
            return refused
        if self.statuses:
            return await answer(self.statuses.popleft())
        messages = await request.json()
        messages = messages if isinstance(messages, list) else [messages]
        tickets = []
        for message in messages:
            if not {"to", "title", "body"} <= message.keys():
                return web.json_response({"errors": [{"code": "VALIDATION_ERROR",
                                                      "message": "to/title/body"}]}, status=400)
            self.messages.append(message)
            token = message["to"]
            if code := self.ticket_errors.get(token):
                tickets.append({"status": "error", "message": f"{token} failed: {code}",
                                "details": {"error": code, "expoPushToken": token}})
                continue
            ticket_id = secrets.token_hex(16)
            self.tickets[ticket_id] = token
            tickets.append({"status": "ok", "id": ticket_id})
        return web.json_response({"data": tickets})

    async def _receipts(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._unauthorized(request)) is not None:
            return refused
        receipts = {}
        for ticket_id in (await request.json())["ids"]:
            if (token := self.tickets.get(ticket_id)) is None:
                continue  # Expo leaves out receipts it does not (yet) have
            if code := self.receipt_errors.get(token):
                receipts[ticket_id] = {"status": "error", "message": code,
                                       "details": {"error": code}}
            else:
                receipts[ticket_id] = {"status": "ok"}
        return web.json_response({"data": receipts})


# --- FCM ---------------------------------------------------------------------------------


def service_account_key(token_uri: str, project_id: str = "terra-test"
                        ) -> tuple[dict, rsa.RSAPrivateKey]:
    """A Firebase service account key file's JSON (a fresh RSA key) whose tokens come from
    `token_uri`, and its private key."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    email = f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
    key = {
        "type": "service_account", "project_id": project_id,
        "private_key_id": secrets.token_hex(20), "private_key": pem,
        "client_email": email, "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    return key, private_key


def _fcm_error(status: int, code: str, message: str, error_code: str | None = None
               ) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if error_code:
        error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                             "errorCode": error_code}]
    return web.json_response({"error": error}, status=status)


class FcmStandIn(_StandIn):
    """FCM HTTP v1 and its OAuth2 token endpoint (`token_uri`). The token endpoint grants
    an access token only for a JWT assertion signed by a service account it was told to
    `trust` (`service_account_key` makes one) asking the FCM scope;
    `messages:send` takes only tokens it granted. `unregister(token)` answers 404
    UNREGISTERED for a device token; `revoke_access_tokens()` makes the next send 401."""

    def __init__(self, project_id: str = "terra-test") -> None:
        super().__init__()
        self.project_id = project_id
        self._trusted: dict[str, rsa.RSAPublicKey] = {}  # client_email -> public key
        self.access_tokens: set[str] = set()
        self.unregistered: set[str] = set()
        self.messages: list[dict] = []
        self.token_requests = 0

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def trust(self, key: dict, public_key: rsa.RSAPublicKey) -> None:
        self._trusted[key["client_email"]] = public_key

    def unregister(self, token: str) -> None:
        self.unregistered.add(token)

    def revoke_access_tokens(self) -> None:
        self.access_tokens.clear()

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        assertion = str(form.get("assertion", ""))
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            claims = jwt.decode(assertion, self._trusted[issuer], algorithms=["RS256"],
                                audience=GOOGLE_TOKEN_AUDIENCE,
                                options={"require": ["iss", "exp", "iat", "scope"]})
        except (jwt.InvalidTokenError, KeyError) as exc:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": str(exc)}, status=400)
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or (
                FCM_SCOPE not in claims["scope"].split()):
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = "ya29.standin-" + secrets.token_urlsafe(24)
        self.access_tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 3599,
                                  "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        await self._record(request)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.access_tokens:
            return _fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication "
                              "credentials.")
        if request.match_info["project"] != self.project_id:
            return _fcm_error(403, "PERMISSION_DENIED", "wrong project")
        message = (await request.json()).get("message") or {}
        data = message.get("data", {})
        if not message.get("token") or not all(isinstance(v, str) for v in data.values()):
            return _fcm_error(400, "INVALID_ARGUMENT", "a token, and string data values",
                              "INVALID_ARGUMENT")
        self.messages.append(message)
        if message["token"] in self.unregistered:
            return _fcm_error(404, "NOT_FOUND", "Requested entity was not found.",
                              "UNREGISTERED")
        return web.json_response(
            {"name": f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"})


# --- webhooks ----------------------------------------------------------------------------


class WebhookReceiver(_Scripted):
    """A user's server: any request to `/hooks/<name>` is recorded and answered 200 unless
    scripted (`script(path, 500, 500, Reply(503, retry_after="1"))`, `Reply(200,
    delay_s=5)` for a slow one, `Reply(307, location=...)` for a redirect)."""

    def __init__(self, default: Reply = Reply(200)) -> None:
        super().__init__(default)

    def hook_url(self, name: str) -> str:
        return f"{self.url}{self.path(name)}"

    @staticmethod
    def path(name: str) -> str:
        return f"/hooks/{name}"

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        await self._record(request)
        return await answer(self._next_reply(request.path))
