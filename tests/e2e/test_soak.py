"""A soak: one stack, tiny generations for a few minutes with idle gaps between bursts,
and pull requests of 50 ms (nats-py then raises its two kinds of timeout often, and the
built-in one now and then). Nothing may stall: every job ends soon after it is sent,
after any idle gap. Then the worker is made to die, and `/ready` must say so within
seconds, naming the domain; once a worker is back, ready again.

Marked `soak` (and slow): about three minutes here. `pytest -m soak` runs it alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from tests.e2e.client import frames_until, open_socket, register

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.soak, pytest.mark.timeout(600)]
DONE = {"generation.image_generated.v1", "job.failed.v1", "generation.cancelled.v1"}
BURSTS = [6, 5, 8, 5, 6, 5, 7]  # 42 generations
IDLE_S = [20, 35, 10, 25, 40, 15]  # between bursts: the stall appeared after idle minutes


async def wait_for_ready(http: httpx.AsyncClient, ready: bool, within_s: float) -> float:
    """Seconds until /ready answers as wanted (always within 1 s itself)."""
    started = time.monotonic()
    while True:
        asked = time.monotonic()
        response = await http.get("/ready")
        assert time.monotonic() - asked < 1.5, "/ready took more than a second"
        if (response.status_code == 200) == ready:
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, response.text
        await asyncio.sleep(0.25)


async def test_tiny_generations_for_minutes_with_idle_gaps_never_stall(stack):
    worker = stack.start_service("generator", "generator_service",
                                 TERRA_FETCH_TIMEOUT_S="0.05", TERRA_PROGRESS_INTERVAL_S="1")
    url = stack.start_gateway(TERRA_READY_WORKERS='["generation"]',
                              TERRA_MAX_GENERATIONS_PER_USER="10")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await wait_for_ready(http, True, 30)
        alice = await register(http)
        socket = (await open_socket(url, alice, "/ws/generate")).socket
        latencies = []
        try:
            for burst, idle in zip(BURSTS, [*IDLE_S, 0], strict=True):
                sent = []
                for i in range(burst):
                    response = await http.post("/api/generate/image", headers=alice.headers,
                                               json={"prompt": f"soak {i}", "width": 256,
                                                     "height": 256, "steps": 2})
                    assert response.status_code == 202, response.text
                    sent.append((response.json()["job_id"], time.monotonic()))
                for job_id, at in sent:
                    # 30 s is far beyond a tiny job's time: a stall, not slowness.
                    frames = await frames_until(socket, job_id, DONE, timeout_s=30)
                    assert frames[-1]["type"] == "generation.image_generated.v1", frames[-1]
                    latencies.append(time.monotonic() - at)
                await asyncio.sleep(idle)
        finally:
            await socket.close()
        print(f"\n{len(latencies)} generations, slowest end {max(latencies):.2f} s after sent")
        assert len(latencies) == sum(BURSTS)

        # The worker hangs (SIGSTOP: alive, silent): its heartbeat expires.
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            hung = await wait_for_ready(http, False, 15)
            reasons = (await http.get("/ready")).json()
            assert "generation" in str(reasons), reasons
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        back = await wait_for_ready(http, True, 15)
        # Killed for good: not ready again until another worker runs.
        worker.kill()
        dead = await wait_for_ready(http, False, 15)
        print(f"/ready: not ready {hung:.1f} s after the hang, ready {back:.1f} s after it "
              f"resumed, not ready {dead:.1f} s after a kill")
        stack.start_service("generator", "generator_service")
        await wait_for_ready(http, True, 60)
