"""Foundation benchmark: event delivery to WebSockets, the accounts API, argon2id.

    python -m bench.foundation [--sockets 100,1000] [--events 2000] [--seconds 5]

Starts its own stack in a temporary directory (embedded nats-server and `weed mini`,
auth_service and one gateway as subprocesses, the way tests/e2e does) and prints a
table. Not a test: the targets are printed next to the results. Events and answers are
counted first: one lost event or one answer not 200, and no figure is printed (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import websockets
from argon2 import PasswordHasher, Type

from auth_service.config import AuthSettings
from bench.common import (
    PASSWORD,
    REGISTER_CONCURRENCY,
    Account,
    Stack,
    check_answers,
    percentile,
    print_machine,
    raise_fd_limit,
    register_users,
    verdict,
)
from contracts import topology
from contracts.generation import GenerationProgressed
from terra.nats.events import EventPublisher

HTTP_CONCURRENCY = 10
TARGET_WS_P99_MS = 25.0
TARGET_WS_VS_PLAIN = 5.0


# --- measurements -----------------------------------------------------------------------


@dataclass
class DeliveryResult:
    sockets: int
    events: int
    connect_s: float
    ws_ms: list[float]
    plain_ms: list[float]
    lost_ws: int
    lost_plain: int


async def measure_delivery(
    base_url: str, stack: Stack, accounts: list[Account], sockets: int, events: int
) -> DeliveryResult:
    ws_base = base_url.replace("http://", "ws://")
    published: dict[str, float] = {}
    ws_seen: dict[str, asyncio.Event] = {}
    plain_seen: dict[str, asyncio.Event] = {}
    ws_ms: list[float] = []
    plain_ms: list[float] = []

    def on_frame(message_id: str, into: list[float], seen: dict[str, asyncio.Event]) -> None:
        now = time.perf_counter()
        if message_id in published:
            into.append((now - published[message_id]) * 1000)
            seen[message_id].set()

    # The lean client: no keep-alive pings, no compression, one reader task per socket.
    async def open_one(account: Account):
        socket = await websockets.connect(
            f"{ws_base}/ws?token={account.access_token}",
            ping_interval=None, compression=None, max_queue=None, open_timeout=30,
        )
        while json.loads(await socket.recv()).get("type") != "ready":
            pass
        return socket

    async def read(socket) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in socket:
                frame = json.loads(text)
                if "seq" in frame:
                    on_frame(frame["payload"]["message_id"], ws_ms, ws_seen)

    users = accounts[:sockets]
    started = time.perf_counter()
    opened = []
    for batch in range(0, len(users), 50):  # in batches, so the gateway's accept queue copes
        opened += await asyncio.gather(*(open_one(a) for a in users[batch : batch + 50]))
    connect_s = time.perf_counter() - started
    readers = [asyncio.create_task(read(s)) for s in opened]

    nc = await stack.connect()
    plain_nc = await stack.connect()

    async def on_plain(msg) -> None:
        on_frame(json.loads(msg.data)["message_id"], plain_ms, plain_seen)

    await plain_nc.subscribe(f"{topology.PREFIX}.evt.>", cb=on_plain)
    await plain_nc.flush()
    events_out = EventPublisher(nc.jetstream())
    lost_ws = lost_plain = 0
    try:
        for i in range(events):
            owner = random.choice(users)
            event = GenerationProgressed(
                user_id=owner.user_id, job_id=f"bench{i}", step=i % 100 + 1, total_steps=100
            )
            ws_seen[event.message_id] = asyncio.Event()
            plain_seen[event.message_id] = asyncio.Event()
            published[event.message_id] = time.perf_counter()
            await events_out.publish(event)  # as a service publishes it
            # One at a time: the next event leaves when this one has arrived (or is lost).
            for seen, kind in ((ws_seen, "ws"), (plain_seen, "plain")):
                try:
                    await asyncio.wait_for(seen[event.message_id].wait(), 2.0)
                except TimeoutError:
                    if kind == "ws":
                        lost_ws += 1
                    else:
                        lost_plain += 1
    finally:
        await plain_nc.drain()
        await nc.drain()
        await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return DeliveryResult(sockets, events, connect_s, ws_ms, plain_ms, lost_ws, lost_plain)


@dataclass
class HttpResult:
    name: str
    requests: int
    statuses: Counter[int]
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def measure_http(base_url: str, accounts: list[Account], seconds: float) -> list[HttpResult]:
    async def run(name: str, request) -> HttpResult:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        users = accounts[:HTTP_CONCURRENCY]
        states = [{"refresh_token": a.refresh_token} for a in users]
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=10))
                for _ in users
            ]
            # Warm-up, not timed: connections open, the gateway has the signing keys.
            await asyncio.gather(*(request(c, a, st) for c, a, st in zip(clients, users, states)))

            async def client_loop(client, account: Account, state: dict) -> None:
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    status = await request(client, account, state)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    statuses[status] += 1

            started = time.perf_counter()
            deadline = started + seconds
            await asyncio.gather(*(client_loop(*args) for args in zip(clients, users, states)))
            elapsed = time.perf_counter() - started
        return HttpResult(name, len(latencies), statuses, elapsed, latencies)

    async def get_me(client, account, state) -> int:
        response = await client.get(
            "/api/me", headers={"Authorization": f"Bearer {account.access_token}"}
        )
        return response.status_code

    async def refresh(client, account, state) -> int:
        response = await client.post(
            "/api/auth/refresh", json={"refresh_token": state["refresh_token"]}
        )
        if response.status_code == 200:
            state["refresh_token"] = response.json()["refresh_token"]  # chain the rotation
        return response.status_code

    return [await run("GET /api/me", get_me), await run("POST /api/auth/refresh", refresh)]


def measure_argon2(rounds: int) -> tuple[dict[str, int], float, float]:
    fields = AuthSettings.model_fields
    params = {
        "memory_kib": fields["argon2_memory_kib"].default,
        "time_cost": fields["argon2_time_cost"].default,
        "parallelism": fields["argon2_parallelism"].default,
    }
    hasher = PasswordHasher(
        time_cost=params["time_cost"], memory_cost=params["memory_kib"],
        parallelism=params["parallelism"], type=Type.ID,
    )
    hashes, timings = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        hashes.append(hasher.hash(PASSWORD))
        timings.append((time.perf_counter() - t0) * 1000)
    verify = []
    for stored in hashes[:rounds]:
        t0 = time.perf_counter()
        hasher.verify(stored, PASSWORD)
        verify.append((time.perf_counter() - t0) * 1000)
    return params, statistics.mean(timings), statistics.mean(verify)


# --- report -----------------------------------------------------------------------------


async def measure(stack: Stack, args: argparse.Namespace, socket_counts: list[int]):
    most = max(socket_counts)
    accounts, took = await register_users(stack.gateway_url, max(most, HTTP_CONCURRENCY))
    print(f"setup     registered {len(accounts)} users through POST /api/auth/register "
          f"in {took:.1f}s ({REGISTER_CONCURRENCY} clients); auth_service ran with "
          f"TERRA_ARGON2_MEMORY_KIB=1024 TERRA_ARGON2_TIME_COST=1 for this set-up only")
    deliveries = []
    for count in socket_counts:
        deliveries.append(await measure_delivery(
            stack.gateway_url, stack, accounts, count, args.events
        ))
    http_results = await measure_http(stack.gateway_url, accounts, args.seconds)
    return deliveries, http_results


def run(args: argparse.Namespace) -> None:
    socket_counts = [int(n) for n in args.sockets.split(",")]
    # Sockets on both ends live on this machine: the bench's and the gateway's (inherited).
    print_machine(raise_fd_limit(2 * max(socket_counts) + 1024))
    with tempfile.TemporaryDirectory(prefix="terra-bench-") as tmp:
        stack = Stack(Path(tmp))
        t0 = time.perf_counter()
        try:
            stack.start()
            print(f"\nstack     nats-server, weed mini, auth_service, 1 gateway up in "
                  f"{time.perf_counter() - t0:.1f}s (logs in a temp dir)")
            deliveries, http_results = asyncio.run(measure(stack, args, socket_counts))
        finally:
            stack.stop()
    for d in deliveries:
        check_answers(f"{d.events} events to {d.sockets} WebSockets",
                      {"delivered": d.events - d.lost_ws, "lost": d.lost_ws}, {"delivered"})
        check_answers(f"{d.events} events to the plain subscriber",
                      {"delivered": d.events - d.lost_plain, "lost": d.lost_plain},
                      {"delivered"})
    for r in http_results:
        check_answers(r.name, r.statuses, {200})
    params, hash_ms, verify_ms = measure_argon2(args.argon2_rounds)

    print("\n(a) event published on TERRA_EVENTS -> owner's WebSocket, one at a time")
    print("    (WebSocket clients live in this process: lean websockets asyncio clients, no")
    print("    compression, no pings; their cost on the same 2 cores is in the figures)")
    header = f"    {'sockets':>7} {'events':>6} {'connect':>8} | {'WS p50':>7} {'WS p99':>7} " \
             f"| {'plain p50':>9} {'plain p99':>9} | {'WS/plain p99':>12}"
    print(header)
    for d in deliveries:
        ws99, plain99 = percentile(d.ws_ms, 99), percentile(d.plain_ms, 99)
        print(f"    {d.sockets:>7} {d.events:>6} {d.connect_s:>7.1f}s | "
              f"{percentile(d.ws_ms, 50):>5.2f}ms {ws99:>5.2f}ms | "
              f"{percentile(d.plain_ms, 50):>7.2f}ms {plain99:>7.2f}ms | {ws99 / plain99:>11.1f}x")
    top = max(deliveries, key=lambda d: d.sockets)
    ws99, plain99 = percentile(top.ws_ms, 99), percentile(top.plain_ms, 99)
    print(f"    target: WS p99 < {TARGET_WS_P99_MS:.0f} ms with {top.sockets} sockets: "
          f"{ws99:.2f} ms, {verdict(ws99 < TARGET_WS_P99_MS)}; within "
          f"{TARGET_WS_VS_PLAIN:.0f}x the plain subscriber's p99: {ws99 / plain99:.1f}x, "
          f"{verdict(ws99 <= TARGET_WS_VS_PLAIN * plain99)}")
    print("    plain = a core nats-py subscriber on 'terra.evt.>' in this process, same events")

    print(f"\n(b) HTTP through the gateway, {HTTP_CONCURRENCY} concurrent clients "
          f"(httpx.AsyncClient each, keep-alive), {args.seconds:.0f}s each")
    print(f"    {'route':<24} {'req/s':>7} {'p50':>8} {'p99':>8} {'requests':>8}")
    for r in http_results:
        print(f"    {r.name:<24} {r.rps:>7.0f} {percentile(r.latencies_ms, 50):>6.1f}ms "
              f"{percentile(r.latencies_ms, 99):>6.1f}ms {r.requests:>8}")
    print("    /api/me: local token check + one NATS request to auth_service; refresh: each")
    print("    client chains its own rotated refresh tokens (KV reads and writes per call)")

    print(f"\n(c) argon2id with the production parameters (auth_service config: "
          f"m={params['memory_kib']} KiB, t={params['time_cost']}, p={params['parallelism']})")
    print(f"    hash {hash_ms:.1f} ms, verify {verify_ms:.1f} ms "
          f"(mean of {args.argon2_rounds}, one thread, stack stopped)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.foundation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", default="100,1000", help="comma-separated socket counts")
    parser.add_argument("--events", type=int, default=2000, help="events per socket count")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each HTTP run")
    parser.add_argument("--argon2-rounds", type=int, default=20)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
