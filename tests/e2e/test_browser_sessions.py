"""What a browser console relies on, against the running stack: WebSocket tickets (no token
in a URL), the refresh token in an httpOnly cookie with CSRF protection, and changing the
password (every other session ends, this device stays signed in)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
import websockets

from contracts.generation import GenerationStarted
from contracts.ids import new_id
from tests.e2e.client import (
    PASSWORD,
    Account,
    publish,
    receive_events,
    register,
    ws_url,
)
from tests.e2e.test_websockets import with_token_lasting

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a brand new passphrase 77"


@pytest.fixture(scope="module")
def other_gateway(stack) -> str:
    return stack.start_gateway()


@pytest.fixture(scope="module")
def brief_tickets_gateway(stack) -> str:
    """A replica whose tickets wait one second for their use."""
    return stack.start_gateway(TERRA_WS_TICKET_TTL_S="1")


async def ticket_of(base_url: str, account: Account) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        response = await client.post("/api/ws/ticket", headers=account.headers)
    assert response.status_code == 201, response.text
    assert response.json()["expires_in"] > 0
    return response.json()["ticket"]


async def first_frame(base_url: str, ticket: str, path: str = "/ws", **params):
    """(the socket, its first frame) when it opens; (None, (code, reason)) when refused."""
    socket = await websockets.connect(ws_url(base_url, path, ticket=ticket, **params))
    try:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
    except websockets.ConnectionClosed as closed:
        return None, (closed.rcvd.code, closed.rcvd.reason)
    return socket, frame


async def closed_with(socket, timeout_s: float = 10.0) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(socket.recv(), timeout_s)
    return closed.value.rcvd.code, closed.value.rcvd.reason


# --- WebSocket tickets ---------------------------------------------------------------------


async def test_a_ticket_opens_one_socket_once(http, gateway_url, other_gateway, nc):
    alice = await register(http)
    ticket = await ticket_of(gateway_url, alice)
    # Issued by one replica, used on another: the tickets live in KV.
    socket, ready = await first_frame(other_gateway, ticket, "/ws/generate")
    assert socket is not None and ready["type"] == "ready", ready
    try:
        seq = await publish(nc.jetstream(), GenerationStarted(user_id=alice.user_id, job_id="t1"))
        assert [f["seq"] for f in await receive_events(socket, 1)] == [seq]
        for base in (gateway_url, other_gateway):  # used: refused everywhere
            refused, (code, reason) = await first_frame(base, ticket)
            assert refused is None and code == 4401 and "ticket" in reason
    finally:
        await socket.close()


async def test_a_ticket_used_twice_at_once_opens_one_socket(http, gateway_url, other_gateway):
    alice = await register(http)
    ticket = await ticket_of(gateway_url, alice)
    outcomes = await asyncio.gather(*(first_frame(base, ticket)
                                      for base in [gateway_url, other_gateway] * 4))
    opened = [socket for socket, _ in outcomes if socket is not None]
    refused = [frame for socket, frame in outcomes if socket is None]
    try:
        assert len(opened) == 1 and len(refused) == 7, outcomes
        assert all(code == 4401 for code, _ in refused)
    finally:
        for socket in opened:
            await socket.close()


async def test_an_expired_or_unknown_ticket_is_refused(http, brief_tickets_gateway):
    alice = await register(http)
    ticket = await ticket_of(brief_tickets_gateway, alice)
    await asyncio.sleep(1.5)
    socket, (code, reason) = await first_frame(brief_tickets_gateway, ticket)
    assert socket is None and code == 4401 and "expired" in reason
    socket, (code, _) = await first_frame(brief_tickets_gateway, "never-issued")
    assert socket is None and code == 4401


async def test_a_ticket_needs_a_live_access_token(http, gateway_url):
    refused = await http.post("/api/ws/ticket")
    assert refused.status_code == 401
    expired = with_token_lasting(await register(http), ttl_s=30, issued_ago_s=40)
    assert (await http.post("/api/ws/ticket", headers=expired.headers)).status_code == 401


async def test_a_ticket_socket_ends_with_its_tokens_session(http, gateway_url, other_gateway):
    """The ticket stands for the token's session: a sign-out everywhere closes its socket
    (4401 revoked), and a ticket issued before the sign-out opens nothing after it."""
    alice = await register(http)
    spare = await ticket_of(gateway_url, alice)
    socket, ready = await first_frame(other_gateway, await ticket_of(gateway_url, alice))
    assert ready["type"] == "ready"
    signed_out = await http.post("/api/auth/logout", headers=alice.headers, json={
        "refresh_token": alice.refresh_token, "everywhere": True})
    assert signed_out.status_code == 204
    assert await closed_with(socket) == (4401, "revoked")
    refused, (code, reason) = await first_frame(gateway_url, spare)
    assert refused is None and code == 4401 and "revoked" in reason


async def test_a_ticket_socket_closes_when_its_token_expires(http, gateway_url):
    short = with_token_lasting(await register(http), ttl_s=4)
    expires_at = jwt.decode(short.access_token, options={"verify_signature": False})["exp"]
    socket, ready = await first_frame(gateway_url, await ticket_of(gateway_url, short))
    assert ready["type"] == "ready"
    code, reason = await closed_with(socket, expires_at - time.time() + 5)
    assert code == 4440 and reason.startswith("token expired")


async def test_the_legacy_token_query_still_opens_a_socket(http, gateway_url):
    alice = await register(http)
    async with websockets.connect(ws_url(gateway_url, token=alice.access_token)) as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "ready"


def test_tickets_never_reach_the_gateways_log(stack):
    """Every socket this module opened had its ticket in the URL; the access log has none
    (`terra.runtime.logs.redact`)."""
    logs = "".join(p.log(10**7) for p in stack.processes if p.name == "gateway")
    assert "ticket=[redacted]" in logs
    for line in logs.splitlines():
        if "ticket=" in line:
            assert "ticket=[redacted]" in line, line


# --- the refresh token in a cookie ---------------------------------------------------------


COOKIE_MODE = {"X-Terra-Refresh-Cookie": "1"}


@pytest.fixture
async def browser(gateway_url):
    """A client that keeps cookies, as a browser on the console's page would."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=15) as client:
        yield client


async def test_cookie_mode_refreshes_with_the_csrf_token_only(browser, http):
    email = (await register(http)).email
    signed_in = await browser.post("/api/auth/login", headers=COOKIE_MODE,
                                   json={"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    body = signed_in.json()
    assert body["refresh_token"] is None and body["csrf_token"]
    cookie = browser.cookies["terra_refresh"]
    set_cookie = next(h for h in signed_in.headers.get_list("set-cookie")
                      if h.startswith("terra_refresh="))
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert "Path=/api/auth" in set_cookie

    # A cross-site request carries the cookie but not the CSRF token: refused, nothing spent.
    forged = await browser.post("/api/auth/refresh", headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    no_header = await browser.post("/api/auth/refresh")
    assert no_header.status_code == 403
    assert browser.cookies["terra_refresh"] == cookie

    # The console's own request: the cookie and the header; the cookie rotates.
    refreshed = await browser.post("/api/auth/refresh",
                                   headers={"X-CSRF-Token": body["csrf_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] is None
    assert browser.cookies["terra_refresh"] != cookie
    me = await browser.get("/api/me", headers={
        "Authorization": f"Bearer {refreshed.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == email
    # The cookie is a refresh token like any other: used once, its replay ends the session.
    replayed = await http.post("/api/auth/refresh", json={"refresh_token": cookie})
    assert replayed.status_code == 401 and replayed.json()["type"].endswith("refresh-token-reused")


async def test_a_cookie_sign_out_ends_the_session_and_clears_the_cookies(browser, http):
    email = (await register(http)).email
    body = (await browser.post("/api/auth/login", headers=COOKIE_MODE,
                               json={"email": email, "password": PASSWORD})).json()
    cookie = browser.cookies["terra_refresh"]
    assert (await browser.post("/api/auth/logout")).status_code == 403  # no CSRF token
    out = await browser.post("/api/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status_code == 204
    assert "terra_refresh" not in browser.cookies and "terra_csrf" not in browser.cookies
    ended = await http.post("/api/auth/refresh", json={"refresh_token": cookie})
    assert ended.status_code == 401


async def test_body_mode_clients_work_unchanged(http):
    alice = await register(http)
    refreshed = await http.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"]
    assert "set-cookie" not in refreshed.headers


# --- changing the password -----------------------------------------------------------------


async def sign_in(http, email: str, password: str = PASSWORD) -> Account:
    response = await http.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(body["user"]["id"], email, body["access_token"], body["refresh_token"])


async def test_a_password_change_ends_other_sessions_and_keeps_this_device(
        http, gateway_url, other_gateway):
    laptop = await register(http)
    phone = await sign_in(http, laptop.email)
    phones_socket, ready = await first_frame(other_gateway, await ticket_of(other_gateway, phone))
    assert ready["type"] == "ready"

    changed = await http.post("/api/auth/password", headers=laptop.headers, json={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200, changed.text
    fresh = changed.json()
    new = Account(laptop.user_id, laptop.email, fresh["access_token"], fresh["refresh_token"])

    # Every earlier session is over: access tokens refused (here at once), refresh tokens
    # refused, the phone's socket closed.
    for old in (laptop, phone):
        assert (await http.get("/api/me", headers=old.headers)).status_code == 401
        stale = await http.post("/api/auth/refresh", json={"refresh_token": old.refresh_token})
        assert stale.status_code == 401
    assert await closed_with(phones_socket) == (4401, "revoked")
    # This device goes on with its new pair, on every gateway.
    for base in (gateway_url, other_gateway):
        async with httpx.AsyncClient(base_url=base, timeout=15) as client:
            assert (await client.get("/api/me", headers=new.headers)).status_code == 200
    renewed = await http.post("/api/auth/refresh", json={"refresh_token": new.refresh_token})
    assert renewed.status_code == 200
    # The old password is gone, the new one signs in.
    old_login = await http.post("/api/auth/login", json={"email": laptop.email,
                                                         "password": PASSWORD})
    assert old_login.status_code == 401
    await sign_in(http, laptop.email, NEW_PASSWORD)


async def test_a_wrong_current_password_is_refused_and_throttled(http):
    alice = await register(http)
    wrong = {"current_password": "not my password 1", "new_password": NEW_PASSWORD}
    for _ in range(5):  # TERRA_LOGIN_MAX_FAILURES_PER_EMAIL's default
        refused = await http.post("/api/auth/password", headers=alice.headers, json=wrong)
        assert refused.status_code == 403, refused.text
        problem = refused.json()
        assert problem["type"].endswith("/wrong-password")
        assert [e["field"] for e in problem["errors"]] == ["current_password"]
    limited = await http.post("/api/auth/password", headers=alice.headers, json={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    # Nothing changed: the session and the password are as they were.
    assert (await http.get("/api/me", headers=alice.headers)).status_code == 200
    refreshed = await http.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 200


async def test_a_weak_new_password_names_its_field(http):
    alice = await register(http)
    weak = await http.post("/api/auth/password", headers=alice.headers, json={
        "current_password": PASSWORD, "new_password": "short"})
    assert weak.status_code == 422
    assert [e["field"] for e in weak.json()["errors"]] == ["new_password"]
    assert (await http.get("/api/me", headers=alice.headers)).status_code == 200


async def test_a_google_only_account_gets_a_clear_409(http, google_keys):
    token = google_keys.mint(sub=new_id()[:20], email=f"{new_id()[:12]}@gmail.com")
    signed_in = await http.post("/api/auth/login", json={"google_id_token": token})
    assert signed_in.status_code == 200, signed_in.text
    headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    refused = await http.post("/api/auth/password", headers=headers, json={
        "current_password": "anything at all 1", "new_password": NEW_PASSWORD})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/no-password")


# --- CORS, with cookie mode ----------------------------------------------------------------


APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def cors_gateway(stack) -> str:
    return stack.start_gateway(TERRA_CORS_ORIGINS=f'["{APP_ORIGIN}"]')


async def test_a_preflight_is_answered_for_an_allowed_origin_only(cors_gateway):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, x-csrf-token, "
                                                   "x-terra-refresh-cookie"}
    async with httpx.AsyncClient(base_url=cors_gateway, timeout=10) as client:
        allowed = await client.options("/api/auth/refresh",
                                       headers={"Origin": APP_ORIGIN, **preflight})
        refused = await client.options("/api/auth/refresh",
                                       headers={"Origin": "https://evil.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "x-csrf-token" in allowed.headers["access-control-allow-headers"].lower()
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in refused.headers


async def test_cookie_mode_works_for_an_allowed_origin_only(cors_gateway, http):
    email = (await register(http)).email
    sign_in = {"email": email, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=cors_gateway, timeout=10) as browser:
        foreign = await browser.post("/api/auth/login", json=sign_in, headers={
            "Origin": "https://evil.example", **COOKIE_MODE})
        assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
        assert "access-control-allow-origin" not in foreign.headers

        allowed = await browser.post("/api/auth/login", json=sign_in, headers={
            "Origin": APP_ORIGIN, **COOKIE_MODE})
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
        assert allowed.headers["access-control-allow-credentials"] == "true"
        csrf = allowed.json()["csrf_token"]  # another origin cannot read terra_csrf

        stolen = await browser.post("/api/auth/refresh", headers={
            "Origin": "https://evil.example", "X-CSRF-Token": csrf})
        assert stolen.status_code == 403
        refreshed = await browser.post("/api/auth/refresh", headers={
            "Origin": APP_ORIGIN, "X-CSRF-Token": csrf})
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.headers["access-control-allow-origin"] == APP_ORIGIN
