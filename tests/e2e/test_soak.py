"""A soak: one stack, tiny generations for a few minutes with idle gaps between bursts,
and pull requests of 50 ms (nats-py then raises its two kinds of timeout often, and the
built-in one now and then). Nothing may stall: every job ends soon after it is sent,
after any idle gap. Then the worker is made to die, and `/ready` must say so within
seconds, naming the domain; once a worker is back, ready again.

Marked `soak` (and slow): about three minutes here. `pytest -m soak` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest

from gateway.readiness import CHECK_CAP_S
from testing.stack import ServiceStack, service_env
from tests.conftest import provision_all
from tests.e2e.client import open_socket, register
from tests.e2e.conftest import ROOT
from tests.infra import nats_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.soak, pytest.mark.timeout(600)]
DONE = {"generation.image_generated.v1", "job.failed.v1", "generation.cancelled.v1"}
BURSTS = [6, 5, 8, 5, 6, 5, 7]  # 42 generations
IDLE_S = [20, 35, 10, 25, 40, 15]  # between bursts: the stall appeared after idle minutes


async def wait_for_ready(http: httpx.AsyncClient, ready: bool, within_s: float) -> float:
    """Seconds until /ready answers as wanted (each probe answered, never hung: sooner
    than a hung check's own cap)."""
    started = time.monotonic()
    while True:
        response = await asyncio.wait_for(http.get("/ready"), CHECK_CAP_S)
        if (response.status_code == 200) == ready:
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, response.text
        await asyncio.sleep(0.25)


@pytest.fixture
def own_stack(tmp_path, s3):
    """A NATS server of its own: no worker of another test may take these jobs or keep
    `/ready` green while this one is made to die."""
    with nats_server(tmp_path / "nats") as endpoint:
        asyncio.run(provision_all(endpoint))
        env = service_env(endpoint.url, s3.endpoint, s3.service_keys,
                          TERRA_NATS_CREDENTIALS_DIR=str(endpoint.credentials.directory),
                          TERRA_LOG_FORMAT="text")
        stack = ServiceStack(env, tmp_path / "logs", cwd=ROOT)
        try:
            stack.start_auth(TERRA_ARGON2_MEMORY_KIB="1024", TERRA_ARGON2_TIME_COST="1")
            yield stack
        finally:
            stack.stop()


async def test_tiny_generations_for_minutes_with_idle_gaps_never_stall(own_stack):
    stack = own_stack
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
                # Jobs end in any order (other workers may share the queue): each one's
                # ending is awaited from the one stream of frames. 30 s is far beyond a
                # tiny job's time: a stall, not slowness.
                waiting = dict(sent)
                async with asyncio.timeout(30):
                    while waiting:
                        frame = json.loads(await socket.recv())
                        if frame.get("job_id") in waiting and frame["type"] in DONE:
                            assert frame["type"] == "generation.image_generated.v1", frame
                            latencies.append(time.monotonic() - waiting.pop(frame["job_id"]))
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
