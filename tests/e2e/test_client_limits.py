"""Bounded resources per client: a request head over the limits gets 431 and its
connection closes (however large the header, the gateway holds little of it); a socket
whose client stops reading is closed and its buffers freed; one user's burst of prompt
optimisations gets at most the per-user rate, the rest 429 with Retry-After."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.client import register

pytestmark = pytest.mark.e2e

SEND_TIMEOUT_S = 1.0
MB = 1024 * 1024
# Sent to a socket that reads nothing: more than every buffer between it and the gateway,
# so the gateway's queue holds the rest until the send timeout closes the socket.
STALLED_EVENTS = 100
EVENT_BYTES = 100 * 1024
STALLED_BYTES = STALLED_EVENTS * EVENT_BYTES
CLOSE_DEADLINE_S = 20.0  # generous: the close comes one send timeout after the buffers fill


@pytest.fixture(scope="module")
def limited(stack) -> tuple[str, int]:
    """A gateway of this module's own (its memory is measured): sends time out after a
    second, and sockets buffer many events, so only the send timeout closes a socket."""
    url = stack.start_gateway(TERRA_WS_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S),
                              TERRA_WS_QUEUE_SIZE="100000")
    return url, stack.processes[-1].proc.pid


def memory_kib(pid: int) -> dict[str, int]:
    """Resident memory now and at its peak (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def raw_exchange(base_url: str, request: bytes, timeout_s: float = 10.0) -> tuple[bytes, str]:
    """Send `request` on a new connection and read until the server closes it: what came
    back and how the connection ended."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer may still be there to read
        received = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                return received, "reset"
            if not chunk:
                return received, "closed"
            received += chunk


def head_with(*headers: bytes, path: bytes = b"/health") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: gateway\r\n" + b"".join(
        header + b"\r\n" for header in headers) + b"\r\n"


def test_a_one_megabyte_header_gets_431_and_the_connection_closes(limited):
    url, _ = limited
    answer, ending = raw_exchange(url, head_with(b"X-Big: " + b"a" * MB))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert ending in ("closed", "reset")
    assert b"request-header-fields-too-large" in answer


def test_two_hundred_headers_get_431(limited):
    url, _ = limited
    many = [b"X-H%d: v" % i for i in range(200)]
    answer, ending = raw_exchange(url, head_with(*many))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert ending in ("closed", "reset")
    upgrade = [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
               b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16))]
    answer, _ = raw_exchange(url, head_with(*upgrade, *many, path=b"/ws"))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_heads_within_the_limits_are_served(limited):
    url, _ = limited
    answer, _ = raw_exchange(url, head_with(b"X-Fair: " + b"a" * 8000,
                                            *[b"X-H%d: v" % i for i in range(60)],
                                            b"Connection: close"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_huge_authorization_header_costs_the_gateway_little_memory(limited):
    url, pid = limited
    header_bytes = 32 * MB
    before = memory_kib(pid)
    answer, _ = raw_exchange(url, head_with(b"Authorization: Bearer " + b"a" * header_bytes,
                                            path=b"/api/me"))
    after = memory_kib(pid)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    print(f"\n32 MB Authorization header: gateway RSS {before['VmRSS']} -> "
          f"{after['VmRSS']} KiB, peak {before['VmHWM']} -> {after['VmHWM']} KiB")
    assert (after["VmHWM"] - before["VmHWM"]) * 1024 < header_bytes / 2  # far less than it


def websocket_handshake(base_url: str, token: str, rcvbuf: int = 4096) -> socket.socket:
    """A socket client with a tiny receive buffer that reads the handshake and nothing
    more (it never reads the `ready` frame or any event)."""
    parts = urlsplit(base_url)
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    conn.settimeout(10)
    conn.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16))
    conn.sendall(b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: gateway\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        response += conn.recv(1)  # byte by byte: leave every frame unread
    assert response.startswith(b"HTTP/1.1 101 "), response
    return conn


async def sockets_open(http: httpx.AsyncClient) -> int:
    return (await http.get("/ready")).json()["sockets"]


async def stall_a_socket(http: httpx.AsyncClient, url: str, nc) -> tuple[float, str]:
    """A new user's socket that reads nothing is sent STALLED_BYTES of events: seconds
    from the first event until the gateway closed it, and how the connection ended (once
    the client has read what the server had sent: nothing of it is held any more)."""
    account = await register(http)
    conn = await asyncio.to_thread(websocket_handshake, url, account.access_token)
    try:
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            while await sockets_open(http) < 1:
                await asyncio.sleep(0.05)
            js = nc.jetstream()
            blob = "x" * EVENT_BYTES
            published_at = time.monotonic()
            for i in range(STALLED_EVENTS):
                event = {"type": "generation.progressed.v1", "job_id": f"big{i}",
                         "user_id": account.user_id, "step": i,
                         "total_steps": STALLED_EVENTS, "blob": blob}
                await js.publish(f"terra.evt.generation.progressed.{account.user_id}",
                                 json.dumps(event).encode())
            while await sockets_open(http) > 0:
                await asyncio.sleep(0.1)
            closed_after = time.monotonic() - published_at
    finally:
        ending = await asyncio.to_thread(drain, conn)
    return closed_after, ending


async def test_a_socket_that_stops_reading_is_closed_and_its_buffers_freed(limited, nc):
    url, pid = limited
    async with httpx.AsyncClient(base_url=url, timeout=15) as http:
        before = memory_kib(pid)
        closed_after, ending = await stall_a_socket(http, url, nc)
        assert ending in ("reset", "closed")
        first = memory_kib(pid)
        for _ in range(2):
            assert (await stall_a_socket(http, url, nc))[1] in ("reset", "closed")
        last = memory_kib(pid)
    print(f"\nstalled socket closed {closed_after:.1f} s after the events began; gateway RSS "
          f"{before['VmRSS']} KiB before, {first['VmRSS']} KiB after the first socket, "
          f"{last['VmRSS']} KiB after two more")
    # The allocator keeps what the gateway frees for reuse: RSS stays near its peak after
    # the first socket. Freed shows as the next two costing next to nothing more; had their
    # queues (big enough for every event) been kept, each would add about STALLED_BYTES.
    assert (last["VmRSS"] - first["VmRSS"]) * 1024 < STALLED_BYTES / 2


def drain(conn: socket.socket) -> str:
    """Read what is left until the server's end of the connection: how it ended."""
    conn.settimeout(10)
    try:
        while conn.recv(1 << 20):
            pass
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "still open"
    finally:
        conn.close()
    return "closed"


async def test_one_users_burst_of_optimisations_is_held_to_the_rate(http, gateway_url):
    alice, bob = await register(http), await register(http)
    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60, limits=limits) as burst:
        answers = await asyncio.gather(*(
            burst.post("/api/prompt/optimize", headers=alice.headers,
                       json={"prompt": f"a lighthouse, take {i}"})
            for i in range(300)))
    statuses = [answer.status_code for answer in answers]
    limit = 60  # TERRA_PROMPT_RATE_LIMIT's default, per minute
    assert statuses.count(202) == limit, sorted(set(statuses))
    assert statuses.count(429) == 300 - limit
    waits = {int(a.headers["retry-after"]) for a in answers if a.status_code == 429}
    assert waits and all(0 < wait <= 60 for wait in waits), waits
    assert answers[statuses.index(429)].json()["type"].endswith("/rate-limited")

    theirs = await http.post("/api/prompt/optimize", headers=bob.headers,
                             json={"prompt": "a lighthouse"})
    assert theirs.status_code == 202, theirs.text
