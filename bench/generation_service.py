"""Generation through the service: its overhead over the bare pipeline call, and
throughput with one worker and with two, on the tiny FLUX, in one run.

    python -m bench.generation_service [--jobs 40] [--burst 40]

Starts its own stack (embedded NATS and S3, auth, generator_service, gateway).
(1) Overhead: jobs one at a time (schnell, 256², 4 steps, 1 image); each is timed from
sending `POST /api/generate/image` to its `image_generated` frame on `/ws/generate`,
and the bare `FluxGenerator.generate()` call for the same request is timed in this
process; the overhead is the service time minus the bare median. Target: p99 < 50 ms.
(2) Throughput: a burst of jobs, four per user, with one generator worker and then with
two. On two cores, two workers share the same CPU. Not a test. Answers (202) and job
endings (image generated) are counted first: any other, and no figure is printed (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import torch
import websockets

from bench.common import (
    Stack,
    check_answers,
    percentile,
    print_machine,
    raise_fd_limit,
    register_users,
    verdict,
)
from generator_service.pipelines import FluxGenerator, GenerationRequest

TARGET_P99_MS = 50.0
JOB = {"prompt": "a lighthouse at dusk", "model": "schnell", "width": 256, "height": 256,
       "steps": 4, "seed": 1}
GENERATED = "generation.image_generated.v1"
JOB_ENDINGS = (GENERATED, "job.failed.v1", "generation.cancelled.v1")


async def service_latencies(stack: Stack, jobs: int) -> list[float]:
    [account], _ = await register_users(stack.gateway_url, 1)
    headers = {"Authorization": f"Bearer {account.access_token}"}
    ws_url = stack.gateway_url.replace("http://", "ws://")
    latencies = []
    statuses: Counter[int] = Counter()
    endings: Counter[str] = Counter()
    async with (httpx.AsyncClient(base_url=stack.gateway_url, headers=headers,
                                  timeout=60) as http,
                websockets.connect(f"{ws_url}/ws/generate?token={account.access_token}",
                                   compression=None) as socket):
        while json.loads(await socket.recv())["type"] != "ready":
            pass
        for _ in range(jobs + 3):  # the first three warm the worker up
            started = time.perf_counter()
            response = await http.post("/api/generate/image", json=JOB)
            statuses[response.status_code] += 1
            if response.status_code != 202:
                continue
            job_id = response.json()["job_id"]
            while True:
                frame = json.loads(await socket.recv())
                if frame.get("job_id") == job_id and frame["type"] in JOB_ENDINGS:
                    endings[frame["type"]] += 1
                    break
            latencies.append((time.perf_counter() - started) * 1000)
    check_answers("POST /api/generate/image, one at a time", statuses, {202})
    check_answers("jobs one at a time, ended", endings, {GENERATED})
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


async def burst_seconds(stack: Stack, burst: int, workers: str) -> float:
    users = -(-burst // 4)  # four jobs each: the per-user cap
    accounts, _ = await register_users(stack.gateway_url, users)
    done = asyncio.Event()
    finished: dict[str, str] = {}  # job id -> the type of the frame that ended it
    wanted: set[str] = set()
    statuses: Counter[int] = Counter()
    ws_url = stack.gateway_url.replace("http://", "ws://")

    async def listen(account) -> None:
        async with websockets.connect(f"{ws_url}/ws/generate?token={account.access_token}",
                                      compression=None) as socket:
            async for text in socket:
                frame = json.loads(text)
                if frame.get("type") in JOB_ENDINGS:
                    finished[frame["job_id"]] = frame["type"]
                    # Done once every job is posted and ended, not when the first ones are.
                    if len(wanted) == burst and wanted <= finished.keys():
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
            statuses[response.status_code] += 1
            if response.status_code == 202:
                wanted.add(response.json()["job_id"])
    check_answers(f"POST /api/generate/image, a burst of {burst}, {workers}", statuses, {202})
    if wanted <= finished.keys():  # the last ending came before its answer was read
        done.set()
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    for task in listeners:
        task.cancel()
    check_answers(f"a burst of {burst}, {workers}, jobs ended",
                  Counter(finished[j] for j in wanted), {GENERATED})
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
            one_worker = asyncio.run(burst_seconds(stack, args.burst, "one worker"))
            stack.services.start_service("generator-2", "generator_service")
            two_workers = asyncio.run(burst_seconds(stack, args.burst, "two workers"))
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
