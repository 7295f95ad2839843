"""A validly signed token whose `sub` is not a user id (a wildcard, a dotted or empty or
overlong value) is refused like a forged one: 401 on REST, 4401 on a socket, and a
socket's replay never gets to read anyone's events with it."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from auth_service.bootstrap import build_token_issuer
from auth_service.config import AuthSettings
from contracts.generation import GenerationStarted
from tests.e2e.client import publish, register, ws_url

pytestmark = pytest.mark.e2e

BAD_SUBS = ["*", ">", "a.b", "", "x" * 200]
ROUTES = [("GET", "/api/me"), ("GET", "/api/models"), ("GET", "/api/training/status"),
          ("POST", "/api/prompt/optimize"), ("GET", "/api/generate/download/x")]


def signed_for(sub: str) -> str:
    """Signed with the local profile's key, which the test stack's auth_service uses."""
    return build_token_issuer(AuthSettings()).issue(user_id=sub, email="x@example.com").token


@pytest.mark.parametrize("sub", BAD_SUBS, ids=repr)
async def test_a_token_for_no_valid_user_is_refused_on_rest(http, sub):
    headers = {"Authorization": f"Bearer {signed_for(sub)}"}
    for method, path in ROUTES:
        response = await http.request(method, path, headers=headers, json={"prompt": "a cat"})
        assert response.status_code == 401, (path, response.text)
        assert "no valid user" in response.json()["detail"]


@pytest.mark.parametrize("sub", BAD_SUBS, ids=repr)
async def test_a_token_for_no_valid_user_gets_no_socket_and_no_replay(http, gateway_url, nc,
                                                                       sub):
    someone = await register(http)
    await publish(nc.jetstream(), GenerationStarted(user_id=someone.user_id, job_id="secret"))
    frames = []
    async with websockets.connect(ws_url(gateway_url, "/ws", token=signed_for(sub),
                                         since=0)) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 5)))
    assert closed.value.rcvd.code == 4401
    assert frames == []  # not even a `ready`, let alone someone's event
