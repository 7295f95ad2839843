"""What a client app does: register over REST, listen on a WebSocket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import httpx
import websockets

from contracts.base import Event
from contracts.generation import GenerationStarted
from contracts.ids import new_id
from terra.nats.events import EventPublisher

PASSWORD = "a long enough passphrase 42"


@dataclass
class Account:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register(client: httpx.AsyncClient, email: str | None = None) -> Account:
    email = email or f"user-{new_id()[:12]}@example.com"
    response = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(body["user"]["id"], email, body["access_token"], body["refresh_token"])


def ws_url(base_url: str, path: str = "/ws", **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return base_url.replace("http://", "ws://") + path + (f"?{query}" if query else "")


@dataclass
class Opened:
    socket: websockets.ClientConnection
    ready: dict
    replayed: list[dict]


async def open_socket(base_url: str, account: Account, path: str = "/ws", **params: object):
    """Connect, collect the replayed events up to the `ready` frame."""
    socket = await websockets.connect(ws_url(base_url, path, token=account.access_token, **params))
    replayed = []
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame.get("type") == "ready":
            return Opened(socket, frame, replayed)
        assert "seq" in frame, frame
        replayed.append(frame)


async def receive_events(socket, count: int, timeout_s: float = 10.0) -> list[dict]:
    frames = []
    while len(frames) < count:
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), timeout_s)))
    return frames


async def publish(js, event: Event) -> int:
    """Publish an event the way services do; returns its stream sequence."""
    return (await EventPublisher(js).publish(event)).seq


async def nothing_more(socket, js, user_id: str, timeout_s: float = 10.0) -> bool:
    """Nothing reached `socket` beyond what the test read: a marker published now (a
    `generation.started` of `user_id`, so for a socket on `/ws` or `/ws/generate`) is its
    next frame. A gateway sends each socket its events in stream order, so anything stray
    published before the marker (a repeat, another user's or domain's event) would come
    first: no quiet period to wait out."""
    marker = await publish(js, GenerationStarted(user_id=user_id, job_id="nothing-more"))
    frame = json.loads(await asyncio.wait_for(socket.recv(), timeout_s))
    if frame.get("seq") != marker:
        raise AssertionError(f"unexpected frame before the marker (seq {marker}): {frame}")
    return True


async def frames_until(socket, job_id: str, final: set[str], timeout_s: float = 60) -> list[dict]:
    """A job's frames from a socket, up to and including the first of type in `final`."""
    frames = []
    async with asyncio.timeout(timeout_s):
        while True:
            frame = json.loads(await socket.recv())
            if frame.get("job_id") != job_id:
                continue
            frames.append(frame)
            if frame["type"] in final:
                return frames


async def stored_events(nc, subject: str) -> list:
    """Every message the events stream holds on `subject` (wildcards allowed)."""
    from nats.js.errors import NotFoundError

    js, found, seq = nc.jetstream(), [], 1
    while True:
        try:
            raw = await js.get_msg("TERRA_EVENTS", seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        found.append(raw)
        seq = raw.seq + 1
