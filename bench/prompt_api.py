"""`POST /api/prompt/optimize?wait=true` end to end: p50/p99 at 1 and 10 clients.

    python -m bench.prompt_api [--requests 4000] [--clients 1,10]

Starts its own stack (embedded nats-server and S3, auth_service, prompt_service with the
offline engine, one gateway) and measures from sending the request to having the result
in hand: token check, command to the work queue, the worker's optimisation, the event
back through the stream to the waiting request. Not a test: the target is printed.
Answers are counted by status: one not 200, and no figure is printed (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.common import (
    LeanHttpClient,
    Stack,
    check_answers,
    percentile,
    print_machine,
    raise_fd_limit,
    register_users,
    verdict,
)

TARGET_P99_MS = 30.0
PROMPTS = (
    "a cat sleeping on a windowsill",
    "portrait of an old fisherman, (detailed eyes:1.3), masterpiece",
    "une maison au bord de la mer au coucher du soleil",
    'a neon sign that says "OPEN ALL NIGHT" in the rain',
    "cyberpunk city street at night, wide shot, reflections",
    "a bowl of ramen",
)


async def run_clients(base_url: str, tokens: list[str], clients: int, requests: int):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    per_client = requests // clients

    async def client_loop(index: int) -> None:
        client = LeanHttpClient(base_url, {"Authorization": f"Bearer {tokens[index]}"})
        try:
            for i in range(per_client):
                body = json.dumps(
                    {"prompt": PROMPTS[(index + i) % len(PROMPTS)], "variants": 1 + i % 2}
                ).encode()
                started = time.perf_counter()
                status, _ = await client.post_json("/api/prompt/optimize?wait=true", body)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return latencies, statuses, time.perf_counter() - started


async def measure(stack: Stack, args: argparse.Namespace) -> list[tuple]:
    counts = [int(c) for c in args.clients.split(",")]
    accounts, _ = await register_users(stack.gateway_url, max(counts))
    tokens = [a.access_token for a in accounts]
    await run_clients(stack.gateway_url, tokens, max(counts), 4 * max(counts))  # warm-up
    rows = []
    for clients in counts:
        rows.append((clients, *await run_clients(stack.gateway_url, tokens, clients,
                                                  args.requests)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="requests per client count")
    parser.add_argument("--clients", default="1,10", help="comma-separated client counts")
    args = parser.parse_args()
    print_machine(raise_fd_limit(4096))
    with tempfile.TemporaryDirectory(prefix="terra-bench-") as tmp:
        # Each client is its own user sending back to back: the per-user prompt rate (60 a
        # minute) would answer most of it 429, which measures refusals, so it is lifted.
        stack = Stack(Path(tmp), workers=(("prompt", "prompt_service"),),
                      gateway_env={"TERRA_PROMPT_RATE_LIMIT": "1000000"})
        try:
            stack.start()
            rows = asyncio.run(measure(stack, args))
        finally:
            stack.stop()
    for clients, _, statuses, _ in rows:
        check_answers(f"POST /api/prompt/optimize?wait=true, {clients} clients", statuses, {200})
    print("\nPOST /api/prompt/optimize?wait=true, offline engine, after a warm-up")
    print(f"    {'clients':>7} {'requests':>8} {'req/s':>7} {'p50':>8} {'p99':>8}")
    for clients, latencies, _, seconds in rows:
        print(f"    {clients:>7} {len(latencies):>8} {len(latencies) / seconds:>7.0f} "
              f"{percentile(latencies, 50):>6.1f}ms {percentile(latencies, 99):>6.1f}ms")
    top = max(rows, key=lambda row: row[0])
    p99 = percentile(top[1], 99)
    print(f"    target: p99 < {TARGET_P99_MS:.0f} ms at {top[0]} clients: {p99:.1f} ms, "
          f"{verdict(p99 < TARGET_P99_MS)}")
    print("    everything (clients, gateway, auth, prompt_service, nats, S3) shares this "
          "machine's cores;")
    print("    the clients are lean keep-alive HTTP/1.1 connections (bench.common.LeanHttpClient)")


if __name__ == "__main__":
    main()
