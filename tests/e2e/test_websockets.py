"""Events reach their owner's sockets, and only theirs; reconnects miss and repeat nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import replace

import jwt
import pytest
import websockets

from auth_service.bootstrap import build_token_issuer
from auth_service.config import AuthSettings
from auth_service.tokens import TokenIssuer, load_private_key
from contracts.generation import GenerationProgressed, GenerationStarted
from contracts.jobs import FailureCode, JobFailed, JobKind
from contracts.prompt import PromptOptimized, TokenCounts
from contracts.training import TrainingProgressed
from tests.e2e.client import (
    Account,
    nothing_more,
    open_socket,
    publish,
    receive_events,
    register,
    ws_url,
)

pytestmark = pytest.mark.e2e



def progressed(user_id: str, job_id: str, step: int) -> GenerationProgressed:
    return GenerationProgressed(user_id=user_id, job_id=job_id, step=step, total_steps=100)


def with_token_lasting(account: Account, ttl_s: int, *, issued_ago_s: float = 0) -> Account:
    """The account with an access token of `ttl_s`, signed as auth_service signs (the stack
    runs the local profile: its published key, which this process holds too), so auth's
    30 s floor on token lifetimes stays as it is."""
    settings = AuthSettings()
    short = TokenIssuer(load_private_key(settings.signing_key.get_secret_value()),
                        issuer=settings.issuer, audience=settings.audience, ttl_s=ttl_s)
    assert short.kid == build_token_issuer(settings).kid
    token = short.issue(user_id=account.user_id, email=account.email,
                        now=time.time() - issued_ago_s).token
    return replace(account, access_token=token)


async def test_a_socket_receives_its_owners_events_and_nobody_elses(http, gateway_url, nc):
    alice, bob = await register(http), await register(http)
    js = nc.jetstream()
    alice_ws = (await open_socket(gateway_url, alice)).socket
    bob_ws = (await open_socket(gateway_url, bob)).socket
    try:
        seq_a = await publish(js, GenerationStarted(user_id=alice.user_id, job_id="ja"))
        seq_b = await publish(js, GenerationStarted(user_id=bob.user_id, job_id="jb"))

        [frame_a] = await receive_events(alice_ws, 1)
        [frame_b] = await receive_events(bob_ws, 1)
        assert frame_a["seq"] == seq_a and frame_a["job_id"] == "ja"
        assert frame_a["type"] == "generation.started.v1"
        assert frame_a["payload"]["user_id"] == alice.user_id
        assert frame_b["seq"] == seq_b and frame_b["job_id"] == "jb"
        assert (await nothing_more(alice_ws, js, alice.user_id)
                and await nothing_more(bob_ws, js, bob.user_id))
    finally:
        await alice_ws.close()
        await bob_ws.close()


async def test_domain_sockets_only_carry_their_domain(http, gateway_url, nc):
    alice = await register(http)
    js = nc.jetstream()
    training_ws = (await open_socket(gateway_url, alice, "/ws/training")).socket
    generate_ws = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    try:
        await publish(js, TrainingProgressed(user_id=alice.user_id, job_id="t1", step=1,
                                             total_steps=10))
        await publish(js, GenerationStarted(user_id=alice.user_id, job_id="g1"))
        await publish(js, JobFailed(user_id=alice.user_id, job_id="t1", kind=JobKind.TRAINING,
                                    code=FailureCode.OUT_OF_MEMORY, reason="out of memory"))

        training = await receive_events(training_ws, 2)
        [generation] = await receive_events(generate_ws, 1)
        assert [f["type"] for f in training] == ["training.progressed.v1", "job.failed.v1"]
        assert training[1]["payload"]["code"] == "out_of_memory"
        assert generation["type"] == "generation.started.v1"
        assert await nothing_more(generate_ws, js, alice.user_id)
    finally:
        await training_ws.close()
        await generate_ws.close()


async def test_reconnect_with_since_misses_nothing_and_repeats_nothing(http, gateway_url, nc):
    alice, bob = await register(http), await register(http)
    js = nc.jetstream()
    socket = (await open_socket(gateway_url, alice, "/ws/generate")).socket
    for step in range(3):
        await publish(js, progressed(alice.user_id, "j1", step))
    first = await receive_events(socket, 3)
    last_seen = first[-1]["seq"]
    await socket.close()

    # While the client is away: its own events, someone else's, another domain's.
    missed = [await publish(js, progressed(alice.user_id, "j1", step)) for step in range(3, 8)]
    await publish(js, progressed(bob.user_id, "jb", 1))
    await publish(js, TrainingProgressed(user_id=alice.user_id, job_id="t", step=1, total_steps=2))

    opened = await open_socket(gateway_url, alice, "/ws/generate", since=last_seen)
    socket = opened.socket
    try:
        assert [f["seq"] for f in opened.replayed] == missed
        assert opened.ready == {"type": "ready", "last_seq": missed[-1], "replayed": 5}
        # Then live, with no gap between replay and live.
        live = await publish(js, progressed(alice.user_id, "j1", 8))
        [frame] = await receive_events(socket, 1)
        assert frame["seq"] == live
        assert await nothing_more(socket, js, alice.user_id)
    finally:
        await socket.close()


async def test_events_published_during_the_replay_arrive_exactly_once(http, gateway_url, nc):
    alice = await register(http)
    js = nc.jetstream()
    base = await publish(js, progressed(alice.user_id, "j", 0))
    for step in range(1, 200):
        await publish(js, progressed(alice.user_id, "j", step))

    async def publish_more() -> list[int]:
        return [await publish(js, progressed(alice.user_id, "j", 200 + i)) for i in range(50)]

    connect = asyncio.create_task(open_socket(gateway_url, alice, "/ws", since=base))
    more = await publish_more()
    opened = await connect
    socket = opened.socket
    try:
        frames = opened.replayed + await receive_events(socket, 199 + 50 - len(opened.replayed))
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(set(seqs)), "out of order or duplicated"
        assert seqs[-50:] == more
        assert await nothing_more(socket, js, alice.user_id)
    finally:
        await socket.close()


async def test_two_gateways_each_deliver_to_their_own_sockets(http, stack, gateway_url, nc):
    second_url = stack.start_gateway()
    alice, bob = await register(http), await register(http)
    js = nc.jetstream()
    alice_ws = (await open_socket(gateway_url, alice)).socket
    bob_ws = (await open_socket(second_url, bob)).socket
    try:
        seq_b = await publish(js, GenerationStarted(user_id=bob.user_id, job_id="jb"))
        seq_a = await publish(js, GenerationStarted(user_id=alice.user_id, job_id="ja"))
        assert (await receive_events(bob_ws, 1))[0]["seq"] == seq_b
        assert (await receive_events(alice_ws, 1))[0]["seq"] == seq_a
        assert (await nothing_more(alice_ws, js, alice.user_id)
                and await nothing_more(bob_ws, js, bob.user_id))
    finally:
        await alice_ws.close()
        await bob_ws.close()


async def test_ping_gets_pong(http, gateway_url):
    alice = await register(http)
    socket = (await open_socket(gateway_url, alice)).socket
    try:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 5)) == {"type": "pong"}
    finally:
        await socket.close()


async def test_token_in_the_authorization_header_is_accepted(http, gateway_url, nc):
    alice = await register(http)
    async with websockets.connect(
        ws_url(gateway_url, "/ws"), additional_headers=alice.headers
    ) as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "ready"


@pytest.mark.parametrize("token", ["", "not-a-jwt", "eyJhbGciOiJub25lIn0.e30."])
async def test_sockets_without_a_valid_token_are_closed(gateway_url, token):
    async with websockets.connect(ws_url(gateway_url, "/ws", token=token)) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4401


async def test_a_bad_since_is_refused(http, gateway_url):
    alice = await register(http)
    url = ws_url(gateway_url, "/ws", token=alice.access_token, since="-3")
    async with websockets.connect(url) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4400


async def test_a_slow_client_is_cut_off_without_holding_up_others(http, stack, nc):
    url = stack.start_gateway(TERRA_WS_QUEUE_SIZE="8")
    alice, bob = await register(http), await register(http)
    js = nc.jetstream()
    # Alice's client never reads; a tiny socket buffer makes the server queue fill fast.
    slow = await websockets.connect(ws_url(url, "/ws", token=alice.access_token), max_queue=1,
                                    compression=None)
    fast = (await open_socket(url, bob)).socket
    try:
        # 400 events of 64 KB of incompressible text (25 MB) outgrow the loopback buffers.
        text = base64.b64encode(os.urandom(48 * 1024)).decode()
        for i in range(400):
            await publish(js, PromptOptimized(user_id=alice.user_id, job_id=f"j{i}",
                                              original=text, optimized=text,
                                              tokens=TokenCounts(clip=1, t5=1), engine="bench"))
        seq_b = await publish(js, GenerationStarted(user_id=bob.user_id, job_id="jb"))
        assert (await receive_events(fast, 1, timeout_s=5))[0]["seq"] == seq_b

        close_code = None
        try:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        except websockets.ConnectionClosed as closed:
            close_code = closed.rcvd.code if closed.rcvd else None
        assert close_code == 4408
    finally:
        await slow.close()
        await fast.close()


async def test_a_socket_ends_with_its_token_and_the_reconnect_misses_nothing(
        http, gateway_url, nc):
    alice = await register(http)
    js = nc.jetstream()
    short = with_token_lasting(alice, ttl_s=6)
    expires_at = jwt.decode(short.access_token, options={"verify_signature": False})["exp"]
    socket = (await open_socket(gateway_url, short, "/ws/generate")).socket
    before = [await publish(js, progressed(alice.user_id, "j1", step)) for step in range(3)]
    assert [frame["seq"] for frame in await receive_events(socket, 3)] == before

    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(socket.recv(), expires_at - time.time() + 5)
    closed_at = time.time()
    # Its own code (not 4401: nothing was refused), and where to resume.
    assert closed.value.rcvd.code == 4440
    assert closed.value.rcvd.reason == (
        f"token expired; refresh and reconnect with since={before[-1]}")
    assert expires_at <= closed_at < expires_at + 3

    # While the client refreshes: more of its events.
    after = [await publish(js, progressed(alice.user_id, "j1", step)) for step in range(3, 6)]
    refreshed = await http.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
    renewed = replace(alice, access_token=refreshed.json()["access_token"])
    since = int(closed.value.rcvd.reason.rpartition("since=")[2])
    reopened = await open_socket(gateway_url, renewed, "/ws/generate", since=since)
    try:
        assert [frame["seq"] for frame in reopened.replayed] == after
        live = await publish(js, progressed(alice.user_id, "j1", 6))
        assert [frame["seq"] for frame in await receive_events(reopened.socket, 1)] == [live]
    finally:
        await reopened.socket.close()


async def test_a_token_expired_at_connect_is_refused_not_ended(http, gateway_url):
    """Expired two seconds ago: within the signature check's leeway, yet refused at
    connect (4401), rather than opened and ended at once."""
    alice = with_token_lasting(await register(http), ttl_s=30, issued_ago_s=32)
    async with websockets.connect(ws_url(gateway_url, "/ws", token=alice.access_token)) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4401
    assert "expired" in closed.value.rcvd.reason
