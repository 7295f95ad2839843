"""Generation through the service: its overhead over the bare pipeline call, and
throughput with one worker and with two, on the tiny FLUX, in one run.

    python -m bench.generation_service [--jobs 40] [--burst 40]

Starts its own stack (embedded NATS and S3, auth, generator_service, gateway).
(1) Overhead: jobs one at a time (schnell, 256², 4 steps, 1 image); each is timed from
sending `POST /api/generate/image` to its `image_generated` frame on `/ws/generate`,
and the bare `FluxGenerator.generate()` call for the same request is timed in this
process; the overhead is the service time minus the bare median. Target: p99 < 50 ms.
(2) Throughput: a burst of jobs, four per user, with one generator worker and then with
two. On two cores, two workers share the same CPU. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch
import websockets

from bench.common import Stack, percentile, print_machine, raise_fd_limit, register_users, verdict
from generator_service.pipelines import FluxGenerator, GenerationRequest

TARGET_P99_MS = 50.0
JOB = {"prompt": "a lighthouse at dusk", "model": "schnell", "width": 256, "height": 256,
       "steps": 4, "seed": 1}


async def service_latencies(stack: Stack, jobs: int) -> list[float]:
    [account], _ = await register_users(stack.gateway_url, 1)
    headers = {"Authorization": f"Bearer {account.access_token}"}
    ws_url = stack.gateway_url.replace("http://", "ws://")
    latencies = []
    async with (httpx.AsyncClient(base_url=stack.gateway_url, headers=headers,
                                  timeout=60) as http,
                websockets.connect(f"{ws_url}/ws/generate?token={account.access_token}",
                                   compression=None) as socket):
        while json.loads(await socket.recv())["type"] != "ready":
            pass
        for _ in range(jobs + 3):  # the first three warm the worker up
            started = time.perf_counter()
            job_id = (await http.post("/api/generate/image", json=JOB)).json()["job_id"]
            while True:
                frame = json.loads(await socket.recv())
                if frame.get("job_id") == job_id and frame["type"] == \
                        "generation.image_generated.v1":
                    break
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies[3:]


def bare_latencies(jobs: int) -> list[float]:
    generator = FluxGenerator.load(None, device="cpu", dtype=torch.float32, profile="gpu")
    request = GenerationRequest(prompt=JOB["prompt"], model="schnell", width=256, height=256,
                                steps=4, seed=1)
    times = []
    for _ in range(jobs + 3):
        started = time.perf_counter()
        generator.generate(request)
        times.append((time.perf_counter() - started) * 1000)
    return times[3:]


async def burst_seconds(stack: Stack, burst: int) -> float:
    users = -(-burst // 4)  # four jobs each: the per-user cap
    accounts, _ = await register_users(stack.gateway_url, users)
    done = asyncio.Event()
    finished: set[str] = set()
    wanted: set[str] = set()
    ws_url = stack.gateway_url.replace("http://", "ws://")

    async def listen(account) -> None:
        async with websockets.connect(f"{ws_url}/ws/generate?token={account.access_token}",
                                      compression=None) as socket:
            async for text in socket:
                frame = json.loads(text)
                if frame.get("type") in ("generation.image_generated.v1", "job.failed.v1"):
                    finished.add(frame["job_id"])
                    if wanted and wanted <= finished:
                        done.set()

    listeners = [asyncio.create_task(listen(a)) for a in accounts]
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        for i in range(burst):
            account = accounts[i % users]
            response = await http.post(
                "/api/generate/image", json={**JOB, "seed": i},
                headers={"Authorization": f"Bearer {account.access_token}"})
            wanted.add(response.json()["job_id"])
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    for task in listeners:
        task.cancel()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation_service",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--burst", type=int, default=40, help="jobs per throughput run")
    args = parser.parse_args()
    print_machine(raise_fd_limit(1024))
    bare = bare_latencies(args.jobs)
    with tempfile.TemporaryDirectory(prefix="terra-bench-") as tmp:
        stack = Stack(Path(tmp), workers=(("generator", "generator_service"),))
        try:
            stack.start()
            service = asyncio.run(service_latencies(stack, args.jobs))
            one_worker = asyncio.run(burst_seconds(stack, args.burst))
            stack.services.start_service("generator-2", "generator_service")
            two_workers = asyncio.run(burst_seconds(stack, args.burst))
        finally:
            stack.stop()
    bare_p50 = statistics.median(bare)
    overhead = [s - bare_p50 for s in service]
    print(f"\n(1) one job at a time, {args.jobs} jobs: schnell 256², 4 steps, 1 image")
    print(f"    bare generate():        p50 {bare_p50:6.1f} ms  p99 {percentile(bare, 99):6.1f} ms")
    print(f"    REST -> WS completed:   p50 {percentile(service, 50):6.1f} ms  "
          f"p99 {percentile(service, 99):6.1f} ms")
    print(f"    service overhead:       p50 {percentile(overhead, 50):6.1f} ms  "
          f"p99 {percentile(overhead, 99):6.1f} ms; target p99 < {TARGET_P99_MS:.0f} ms: "
          f"{verdict(percentile(overhead, 99) < TARGET_P99_MS)}")
    print(f"\n(2) a burst of {args.burst} jobs, four per user (the cap)")
    print(f"    one worker:   {args.burst / one_worker:5.1f} jobs/s ({one_worker:.1f} s)")
    print(f"    two workers:  {args.burst / two_workers:5.1f} jobs/s ({two_workers:.1f} s); "
          f"{one_worker / two_workers:.2f}× (both on this machine's 2 cores)")


if __name__ == "__main__":
    main()
