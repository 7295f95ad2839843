"""The gateway's account routes over a fake auth_service: cookie mode (the refresh token in
an httpOnly cookie, CSRF), the password change's errors, WebSocket tickets, CORS."""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from types import SimpleNamespace

import httpx
import pytest

from contracts.auth import (
    AuthErrorCode,
    AuthFailure,
    ChangePassword,
    Done,
    LoginWithPassword,
    Logout,
    RefreshTokens,
    Register,
    TokenPair,
    User,
)
from contracts.base import utcnow
from contracts.ids import new_id
from gateway.app import create_app
from gateway.auth_client import failure_to_problem
from gateway.config import GatewaySettings
from gateway.deps import get_caller
from gateway.security import Caller
from gateway.session_cookies import csrf_matches, csrf_token_for, origin_allowed
from gateway.tickets import InvalidTicket, WsTickets
from terra.runtime.logs import redact
from terra.settings import Profile
from tests.fakes import FakeKeyValue

USER = new_id()
ALLOWED = "https://console.example.com"


class FakeAuth:
    """auth_service as the routes see it: every request recorded, answers made up."""

    def __init__(self) -> None:
        self.requests: list = []
        self.failure: AuthFailure | None = None

    async def call(self, subject, request, reply_type, *, fields=None):
        self.requests.append(request)
        if self.failure is not None:
            raise failure_to_problem(self.failure, fields)
        if isinstance(request, Logout):
            return Done()
        user = User(id=USER, email="ada@example.com", providers=["password"],
                    created_at=utcnow())
        return TokenPair(user=user, access_token="a.b.c", refresh_token=secrets.token_urlsafe(8),
                         expires_in=900, refresh_expires_in=3600)

    def refresh_tokens_sent(self) -> list[str]:
        return [r.refresh_token for r in self.requests if isinstance(r, RefreshTokens | Logout)]


class FakeRevocations:
    async def sync(self, timeout_s: float = 1.0) -> bool:
        return True


def make_app(auth: FakeAuth, profile: Profile = Profile.LOCAL, **settings):
    # The production profile's other checks (keys, CA) are not what these tests are about.
    settings = GatewaySettings(**settings).model_copy(update={"profile": profile})
    parts = SimpleNamespace(settings=settings, auth=auth, revocations=FakeRevocations(),
                            tickets=WsTickets(FakeKeyValue("tickets"), settings.ws_ticket_ttl_s),
                            token_verifier=None)

    @asynccontextmanager
    async def over_fakes(_settings):
        yield parts

    app = create_app(settings, parts_from=over_fakes)
    app.dependency_overrides[get_caller] = lambda: Caller(
        user_id=USER, email="ada@example.com", token_id="j", issued_at=1000.0,
        expires_at=2000.0)
    return app


@asynccontextmanager
async def client_of(app, base_url: str = "http://127.0.0.1:8000"):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@pytest.fixture
def auth() -> FakeAuth:
    return FakeAuth()


@pytest.fixture
async def http(auth):
    async with client_of(make_app(auth, cors_origins=[ALLOWED])) as client:
        yield client


SIGN_IN = {"email": "ada@example.com", "password": "a long enough passphrase"}
COOKIE_MODE = {"X-Terra-Refresh-Cookie": "1"}


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie by name: its whole header, attributes included."""
    return {header.split("=", 1)[0]: header
            for header in response.headers.get_list("set-cookie")}


# --- the rules ---------------------------------------------------------------------------


def test_the_csrf_token_is_bound_to_the_refresh_token():
    csrf = csrf_token_for("refresh-1")
    assert csrf_matches("refresh-1", csrf)
    assert not csrf_matches("refresh-2", csrf)  # another session's
    assert not csrf_matches("refresh-1", None) and not csrf_matches("refresh-1", "")
    assert "refresh-1" not in csrf


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True),  # not a cross-site browser request
    ("http://gw.example:8000", True),  # the gateway's own origin (its console)
    (ALLOWED, True),
    ("https://evil.example", False),
    ("null", False),  # a sandboxed frame, a file: page
    ("http://gw.example:8001", False),
])
def test_which_origins_may_use_the_cookie(origin, ok):
    assert origin_allowed(origin, "gw.example:8000", [ALLOWED]) is ok


def test_secrets_of_the_new_routes_never_reach_a_log():
    line = ('{"current_password": "old secret 1", "new_password": "new secret 2"} '
            'GET /ws?ticket=T1cket-value&since=3 cookie: terra_refresh=R3fresh')
    clean = redact(line)
    for secret in ("old secret 1", "new secret 2", "T1cket-value", "R3fresh"):
        assert secret not in clean
    assert "since=3" in clean


# --- cookie mode ---------------------------------------------------------------------------


async def test_without_the_header_the_refresh_token_stays_in_the_body(http, auth):
    response = await http.post("/api/auth/login", json=SIGN_IN)
    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] and body["csrf_token"] is None
    assert "set-cookie" not in response.headers
    # and a body refresh needs no CSRF header, as before
    renewed = await http.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert renewed.status_code == 200 and renewed.json()["refresh_token"]
    assert auth.refresh_tokens_sent() == [body["refresh_token"]]


@pytest.mark.parametrize("route", ["/api/auth/login", "/api/auth/register"])
async def test_cookie_mode_puts_the_refresh_token_in_an_httponly_cookie(http, route):
    body = SIGN_IN if route.endswith("login") else {**SIGN_IN, "display_name": "Ada"}
    response = await http.post(route, json=body, headers=COOKIE_MODE)
    assert response.status_code in (200, 201)
    tokens = response.json()
    assert tokens["refresh_token"] is None and tokens["access_token"]
    cookies = set_cookies(response)
    refresh, csrf = cookies["terra_refresh"], cookies["terra_csrf"]
    assert "HttpOnly" in refresh and "Path=/api/auth" in refresh
    assert "SameSite=strict" in refresh and "Max-Age=3600" in refresh
    assert "HttpOnly" not in csrf and "Path=/" in csrf  # the console's script reads it
    assert f"terra_csrf={tokens['csrf_token']};" in csrf
    # Local profile, plain http, loopback: a browser could not send a Secure cookie back.
    assert "Secure" not in refresh


@pytest.mark.parametrize(("base_url", "profile"), [
    ("http://gw.example", Profile.LOCAL), ("https://127.0.0.1", Profile.LOCAL),
    ("http://127.0.0.1", Profile.PRODUCTION)])
async def test_the_cookie_is_secure_unless_local_http_on_loopback(auth, base_url, profile):
    app = make_app(auth, profile=profile)
    async with client_of(app, base_url) as client:
        response = await client.post("/api/auth/login", json=SIGN_IN, headers=COOKIE_MODE)
    assert all("Secure" in header for header in set_cookies(response).values())


async def cookie_session(http) -> str:
    """Sign in in cookie mode; the CSRF token (the client keeps the cookies)."""
    response = await http.post("/api/auth/login", json=SIGN_IN, headers=COOKIE_MODE)
    assert response.status_code == 200
    return response.json()["csrf_token"]


async def test_a_cookie_refresh_with_the_csrf_token_rotates_the_cookie(http, auth):
    csrf = await cookie_session(http)
    first = http.cookies["terra_refresh"]
    response = await http.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] is None
    assert auth.refresh_tokens_sent() == [first]
    second = http.cookies["terra_refresh"]
    assert second != first and http.cookies["terra_csrf"] == csrf_token_for(second)
    # `{}` is a cookie refresh too, with the new CSRF token
    again = await http.post("/api/auth/refresh", json={},
                            headers={"X-CSRF-Token": response.json()["csrf_token"]})
    assert again.status_code == 200 and auth.refresh_tokens_sent() == [first, second]


@pytest.mark.parametrize("headers", [
    {},  # no CSRF header: what a form or an <img> on another site sends
    {"X-CSRF-Token": "guessed"},
    {"X-CSRF-Token": csrf_token_for("another session")},
], ids=["missing", "wrong", "another session's"])
async def test_a_cookie_refresh_without_the_csrf_token_is_refused_and_spends_nothing(
        http, auth, headers):
    await cookie_session(http)
    before = dict(http.cookies)
    response = await http.post("/api/auth/refresh", headers=headers)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/csrf-refused")
    assert "set-cookie" not in response.headers
    assert auth.refresh_tokens_sent() == [] and dict(http.cookies) == before
    logout = await http.post("/api/auth/logout", headers=headers)
    assert logout.status_code == 403 and auth.refresh_tokens_sent() == []


async def test_a_cross_site_origin_may_not_use_the_cookie_even_with_the_csrf_token(http, auth):
    csrf = await cookie_session(http)
    response = await http.post("/api/auth/refresh", headers={
        "X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert response.status_code == 403 and auth.refresh_tokens_sent() == []
    for origin in (ALLOWED, "http://127.0.0.1:8000"):  # allowed, and the gateway's own
        csrf = http.cookies["terra_csrf"]
        ok = await http.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf,
                                                            "Origin": origin})
        assert ok.status_code == 200, ok.text


async def test_no_cookie_and_no_body_token_is_401(http):
    response = await http.post("/api/auth/refresh", headers={"X-CSRF-Token": "x"})
    assert response.status_code == 401
    assert response.json()["type"].endswith("/invalid-refresh-token")


async def test_an_oversized_cookie_is_401_not_a_crash(http, auth):
    forged = "x" * 600  # whoever sends it can compute its CSRF token
    response = await http.post("/api/auth/refresh", headers={
        "X-CSRF-Token": csrf_token_for(forged), "Cookie": f"terra_refresh={forged}"})
    assert response.status_code == 401 and auth.requests == []


async def test_a_cookie_logout_ends_that_session_and_clears_the_cookies(http, auth):
    csrf = await cookie_session(http)
    token = http.cookies["terra_refresh"]
    response = await http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204
    assert auth.refresh_tokens_sent() == [token]
    cleared = set_cookies(response)
    assert "Max-Age=0" in cleared["terra_refresh"] and "Path=/api/auth" in cleared["terra_refresh"]
    assert "Max-Age=0" in cleared["terra_csrf"]
    assert "terra_refresh" not in http.cookies


async def test_a_body_logout_works_as_before(http, auth):
    response = await http.post("/api/auth/logout", json={"refresh_token": "opaque"})
    assert response.status_code == 204 and auth.refresh_tokens_sent() == ["opaque"]
    assert "set-cookie" not in response.headers


# --- password change -----------------------------------------------------------------------


CHANGE = {"current_password": "the old passphrase", "new_password": "a new passphrase 9"}


async def test_a_password_change_answers_a_new_pair_for_this_device(http, auth):
    response = await http.post("/api/auth/password", json=CHANGE,
                               headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 200, response.text
    assert response.json()["access_token"] and response.json()["refresh_token"]
    (sent,) = auth.requests
    assert isinstance(sent, ChangePassword) and sent.user_id == USER
    assert sent.access_token == "a.b.c" and sent.new_password == CHANGE["new_password"]
    # cookie mode as the other routes
    cookies = await http.post("/api/auth/password", json=CHANGE, headers={
        "Authorization": "Bearer a.b.c", **COOKIE_MODE})
    assert cookies.json()["refresh_token"] is None and "terra_refresh" in http.cookies


@pytest.mark.parametrize(("code", "status", "slug", "field"), [
    (AuthErrorCode.WRONG_PASSWORD, 403, "wrong-password", "current_password"),
    (AuthErrorCode.WEAK_PASSWORD, 422, "weak-password", "new_password"),
    (AuthErrorCode.NO_PASSWORD, 409, "no-password", None),
])
async def test_password_change_refusals_name_their_field(http, auth, code, status, slug, field):
    auth.failure = AuthFailure(code=code, detail="because")
    response = await http.post("/api/auth/password", json=CHANGE,
                               headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == status
    problem = response.json()
    assert problem["type"].endswith(f"/{slug}")
    if field:
        assert [error["field"] for error in problem["errors"]] == [field]
    else:
        assert "errors" not in problem


async def test_the_registration_field_keeps_its_name(http, auth):
    auth.failure = AuthFailure(code=AuthErrorCode.WEAK_PASSWORD, detail="too short")
    response = await http.post("/api/auth/register", json=SIGN_IN)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "password"
    assert isinstance(auth.requests[0], Register)


async def test_a_password_change_without_its_fields_is_422(http):
    response = await http.post("/api/auth/password", json={"new_password": "x" * 12},
                               headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 422
    assert "current_password" in {error["field"] for error in response.json()["errors"]}


# --- WebSocket tickets ---------------------------------------------------------------------


async def test_a_ticket_is_opaque_single_use_and_carries_the_tokens_session(http):
    response = await http.post("/api/ws/ticket", headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] == 30 and "." not in body["ticket"]  # not a JWT
    tickets = http._transport.app.state.parts.tickets
    caller = await tickets.redeem(body["ticket"])
    assert (caller.user_id, caller.issued_at, caller.expires_at) == (USER, 1000.0, 2000.0)
    with pytest.raises(InvalidTicket):
        await tickets.redeem(body["ticket"])


async def test_a_ticket_expires_and_an_unknown_one_is_refused():
    now = [100.0]
    tickets = WsTickets(FakeKeyValue("tickets"), 30, clock=lambda: now[0])
    caller = Caller(user_id=USER, email=None, token_id=None, issued_at=1.0, expires_at=9e9)
    ticket = await tickets.issue(caller)
    now[0] += 30.5
    with pytest.raises(InvalidTicket, match="expired"):
        await tickets.redeem(ticket)
    for bad in (None, "", "never-issued", "x" * 500):
        with pytest.raises(InvalidTicket):
            await tickets.redeem(bad)


async def test_the_bucket_holds_the_tickets_digest_never_the_ticket():
    kv = FakeKeyValue("tickets")
    tickets = WsTickets(kv, 30)
    ticket = await tickets.issue(Caller(user_id=USER, email=None, token_id=None))
    (key,) = kv.live_keys()
    assert ticket not in key and key.startswith("ticket.")


# --- CORS ----------------------------------------------------------------------------------


PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, x-csrf-token"}


async def test_a_preflight_from_an_allowed_origin_is_answered_with_credentials(http):
    response = await http.options("/api/auth/refresh", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "x-csrf-token" in response.headers["access-control-allow-headers"].lower()


async def test_a_preflight_from_a_refused_origin_gets_no_allow_origin(http):
    response = await http.options("/api/auth/refresh",
                                  headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert response.status_code == 400
    # Without an allow-origin the browser sends nothing (Starlette still names
    # credentials, which a browser only reads beside an allowed origin).
    assert "access-control-allow-origin" not in response.headers


async def test_a_credentialed_request_is_shared_with_allowed_origins_only(http):
    allowed = await http.post("/api/auth/login", json=SIGN_IN,
                              headers={"Origin": ALLOWED, **COOKIE_MODE})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert allowed.headers["access-control-allow-credentials"] == "true"
    # Another origin: its page may not read the answer, and gets no session cookie at all
    # (a forged sign-in would plant the attacker's session in the victim's browser).
    refused = await http.post("/api/auth/login", json=SIGN_IN,
                              headers={"Origin": "https://evil.example", **COOKIE_MODE})
    assert "access-control-allow-origin" not in refused.headers
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    # without cookie mode it is an ordinary sign-in, whose answer the browser hides
    plain = await http.post("/api/auth/login", json=SIGN_IN,
                            headers={"Origin": "https://evil.example"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


async def test_without_cors_origins_no_cors_headers_at_all(auth):
    async with client_of(make_app(auth)) as client:
        response = await client.options("/api/auth/refresh",
                                        headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "access-control-allow-origin" not in response.headers


def test_login_requests_carry_no_cookie_fields():
    # The refresh cookie is the gateway's business: auth_service's messages are unchanged.
    assert "csrf" not in LoginWithPassword.model_fields
