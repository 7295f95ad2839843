"""Tokens die with the account, and with "sign out everywhere": on every REST route that
takes a token and on new sockets, at once on the gateway that was asked and within
moments on every other (they share one revocation list); open sockets of that user close
with 4401 "revoked"; tokens from a sign-in afterwards work."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
import websockets

from contracts.generation import GenerationStarted
from contracts.ids import new_id
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.e2e.client import (
    PASSWORD,
    Account,
    open_socket,
    publish,
    receive_events,
    register,
    ws_url,
)

pytestmark = pytest.mark.e2e

SHARED_LIST_DELAY_S = 2.0  # how long another gateway may take to hear of a revocation


@pytest.fixture(scope="module")
def other_gateway(stack) -> str:
    return stack.start_gateway()


# Public routes that take a token for one case only: signing out everywhere.
TOKEN_OPTIONAL = {("POST", "/api/auth/logout")}


def token_routes(*, optional: bool = False) -> list[tuple[str, str]]:
    """(method, path) of every REST route that authenticates its caller (the API document
    names its bearer scheme), path parameters filled with fresh ids; with `optional`, also
    the public ones that take a token for some requests."""
    routes = []
    for path, operations in create_app(GatewaySettings()).openapi()["paths"].items():
        filled = re.sub(r"\{[^}]+\}", lambda _: new_id(), path)
        routes += [(method.upper(), filled) for method, operation in operations.items()
                   if operation.get("security")]
    return [route for route in routes if optional or route not in TOKEN_OPTIONAL]


def test_the_route_list_is_what_it_should_be():
    found = token_routes()
    paths = {path for _, path in found}
    assert ("GET", "/api/me") in found and ("DELETE", "/api/me") in found
    assert any(p.startswith("/api/prompt/") for p in paths)
    assert any(p.startswith("/api/generate/") for p in paths)
    assert any(p.startswith("/api/training/") for p in paths)
    # public: sign-in and such; the password change is the caller's own
    assert {p for p in paths if p.startswith("/api/auth/")} == {"/api/auth/password"}
    assert "/api/ws/ticket" in paths
    assert TOKEN_OPTIONAL <= set(token_routes(optional=True))  # its token is documented
    assert len(found) >= 15, found


async def refused_everywhere(base_url: str, token: str) -> list[str]:
    """Each token route that did not answer 401 (empty: all refused)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": new_id()}
        answers = await asyncio.gather(*(client.request(method, path, headers=headers, json={})
                                         for method, path in token_routes()))
    return [f"{method} {path}: {answer.status_code}"
            for (method, path), answer in zip(token_routes(), answers, strict=True)
            if answer.status_code != 401 or answer.headers.get("www-authenticate") != "Bearer"]


async def me(base_url: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        return (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
                ).status_code


async def eventually_refused(base_url: str, token: str) -> float:
    """Seconds until `/api/me` refuses the token (the shared list reached that gateway)."""
    started = time.monotonic()
    while await me(base_url, token) != 401:
        assert time.monotonic() - started < SHARED_LIST_DELAY_S, "never refused"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def closed_with(socket, timeout_s: float = 5.0) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:  # events may precede the close
            await asyncio.wait_for(socket.recv(), timeout_s)
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def refused_socket(base_url: str, token: str) -> tuple[int, str]:
    async with websockets.connect(ws_url(base_url, "/ws", token=token)) as socket:
        return await closed_with(socket)


async def test_deleting_the_account_ends_every_token_and_socket_on_every_gateway(
        http, gateway_url, other_gateway, nc):
    alice, bob = await register(http), await register(http)
    assert await me(gateway_url, alice.access_token) == 200
    assert await me(other_gateway, alice.access_token) == 200
    here = (await open_socket(gateway_url, alice)).socket
    there = (await open_socket(other_gateway, alice, "/ws/generate")).socket
    bobs = (await open_socket(other_gateway, bob)).socket
    try:
        assert (await http.delete("/api/me", headers=alice.headers)).status_code == 202

        # The gateway that was asked refuses at once, everywhere; the other one moments later.
        assert await refused_everywhere(gateway_url, alice.access_token) == []
        delay = await eventually_refused(other_gateway, alice.access_token)
        assert await refused_everywhere(other_gateway, alice.access_token) == []
        print(f"\nthe other gateway refused the token {delay * 1000:.0f} ms after the answer")

        assert await closed_with(here) == (4401, "revoked")
        assert await closed_with(there) == (4401, "revoked")
        for base in (gateway_url, other_gateway):
            code, reason = await refused_socket(base, alice.access_token)
            assert code == 4401 and "revoked" in reason

        # Nobody else's socket is touched.
        await publish(nc.jetstream(), GenerationStarted(user_id=bob.user_id, job_id="b1"))
        [frame] = await receive_events(bobs, 1)
        assert frame["job_id"] == "b1"
    finally:
        for socket in (here, there, bobs):
            await socket.close()


async def login(http, email: str) -> Account:
    response = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(body["user"]["id"], email, body["access_token"], body["refresh_token"])


async def test_signing_out_everywhere_ends_earlier_sessions_but_not_later_ones(
        http, gateway_url, other_gateway):
    laptop = await register(http)
    phone = await login(http, laptop.email)
    phones_socket = (await open_socket(other_gateway, phone)).socket
    try:
        response = await http.post("/api/auth/logout", headers=laptop.headers, json={
            "refresh_token": laptop.refresh_token, "everywhere": True})
        assert response.status_code == 204, response.text

        for token in (laptop.access_token, phone.access_token):
            assert await me(gateway_url, token) == 401  # at once where it was asked
            await eventually_refused(other_gateway, token)
        assert await closed_with(phones_socket) == (4401, "revoked")
        # The phone's session is over too: its refresh token no longer works.
        for refresh_token in (laptop.refresh_token, phone.refresh_token):
            refused = await http.post("/api/auth/refresh", json={"refresh_token": refresh_token})
            assert refused.status_code == 401, refused.text
    finally:
        await phones_socket.close()

    # Signing in again afterwards gives tokens that work, on every gateway and socket.
    again = await login(http, laptop.email)
    assert await me(gateway_url, again.access_token) == 200
    assert await me(other_gateway, again.access_token) == 200
    opened = await open_socket(other_gateway, again)
    await opened.socket.close()
    refreshed = await http.post("/api/auth/refresh", json={"refresh_token": again.refresh_token})
    assert refreshed.status_code == 200, refreshed.text


async def test_only_a_live_session_may_sign_out_everywhere(http):
    account = await register(http)
    rotated = await http.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert rotated.status_code == 200
    spent = await http.post("/api/auth/logout", headers=account.headers, json={
        "refresh_token": account.refresh_token, "everywhere": True})
    assert spent.status_code == 401
    assert await me(str(http.base_url), account.access_token) == 200


async def test_a_revoked_access_token_cannot_sign_out_everywhere_again(http):
    """Signing out everywhere takes a live access token: one it revoked is refused (401,
    by the gateway and by auth_service alike), and nothing more ends."""
    laptop = await register(http)
    phone = await login(http, laptop.email)
    first = await http.post("/api/auth/logout", headers=phone.headers, json={
        "refresh_token": phone.refresh_token, "everywhere": True})
    assert first.status_code == 204, first.text
    later = await login(http, laptop.email)
    stale = await http.post("/api/auth/logout", headers=phone.headers, json={
        "refresh_token": later.refresh_token, "everywhere": True})
    assert stale.status_code == 401 and stale.headers["www-authenticate"] == "Bearer"
    assert await me(str(http.base_url), later.access_token) == 200
    refreshed = await http.post("/api/auth/refresh", json={"refresh_token": later.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
