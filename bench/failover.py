"""How long a NATS node loss interrupts service: from the SIGKILL of the node that leads
the prompt commands stream and the events stream to (a) the first request answered 202
again and (b) the first live event on a socket.

    python -m bench.failover [--kills 3]

Starts a 3-node cluster on loopback (R3 streams and KV, NKEY credentials), S3, auth,
prompt_service and one gateway. A client sends `POST /api/prompt/optimize` every 50 ms
(a 503 is expected while there is no leader) and listens on `/ws/prompt`. For each kill,
both leaders are moved to one node, the node is SIGKILLed, the two delays are taken, and
the node is restarted before the next round. Not a test: figures depend on the machine.
An answer other than 202 or 503, or a round the service never came back from, and it
exits 1 (no median over the rounds that did).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

from bench.common import (
    ROOT,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    check_answers,
    print_machine,
    raise_fd_limit,
)
from contracts import topology
from contracts.permissions import OPERATOR, inbox_prefix
from terra.nats.accounts import Credentials
from terra.nats.provisioning import provision
from terra.ops.servers import EmbeddedS3
from terra.records.objects import ObjectStorage
from testing.cluster import EmbeddedNatsCluster
from testing.stack import ServiceStack, service_env

PASSWORD = "a long enough passphrase 42"


class Traffic:
    """Requests every 50 ms and a socket; when each last succeeded / delivered."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.answered: list[float] = []  # monotonic times of 202 answers
        self.delivered: list[float] = []  # monotonic times of live events
        self.statuses: dict[int, int] = {}

    async def requests(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            while True:
                try:
                    response = await http.post(
                        "/api/prompt/optimize", json={"prompt": "a fox in the snow"},
                        headers={"Authorization": f"Bearer {self.token}"})
                    code = response.status_code
                except httpx.TransportError:
                    code = 0
                self.statuses[code] = self.statuses.get(code, 0) + 1
                if code == 202:
                    self.answered.append(time.monotonic())
                await asyncio.sleep(0.05)

    async def socket(self) -> None:
        ws = self.url.replace("http://", "ws://")
        async with websockets.connect(f"{ws}/ws/prompt?token={self.token}") as socket:
            async for raw in socket:
                if "seq" in json.loads(raw):
                    self.delivered.append(time.monotonic())

    @staticmethod
    def first_after(times: list[float], moment: float) -> float | None:
        later = [t for t in times if t > moment]
        return later[0] - moment if later else None


async def measure(cluster: EmbeddedNatsCluster, credentials: Credentials, url: str,
                  kills: int) -> list[tuple[str, float | None, float | None]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post("/api/auth/register", json={
            "email": f"failover-{time.time_ns()}@example.com", "password": PASSWORD})
        response.raise_for_status()
    traffic = Traffic(url, response.json()["access_token"])
    tasks = [asyncio.create_task(traffic.requests()), asyncio.create_task(traffic.socket())]
    import nats

    operator = await nats.connect(cluster.urls, inbox_prefix=inbox_prefix(OPERATOR),
                                  nkeys_seed=str(credentials.seed_file(OPERATOR)))
    rounds = []
    try:
        await asyncio.sleep(3)  # steady traffic first
        for _ in range(kills):
            node = await asyncio.to_thread(cluster.stream_leader, topology.EVENTS.name)
            await cluster.move_leader(operator, node, topology.PROMPT_COMMANDS.name)
            await asyncio.sleep(2)
            killed = time.monotonic()
            cluster.kill(node)
            await asyncio.sleep(20)
            rounds.append((node, Traffic.first_after(traffic.answered, killed),
                           Traffic.first_after(traffic.delivered, killed)))
            await asyncio.to_thread(cluster.restart, node)
            await asyncio.sleep(5)
    finally:
        for task in tasks:
            task.cancel()
        await operator.close()
    # A 503 is the answer while a stream has no leader; anything else is a fault.
    check_answers("POST /api/prompt/optimize during the run", traffic.statuses, {202, 503})
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    print_machine(raise_fd_limit(4096))
    with tempfile.TemporaryDirectory(prefix="terra-failover-") as tmp:
        work = Path(tmp)
        credentials = Credentials.ensure(work / "creds")
        cluster = EmbeddedNatsCluster(work / "nats",
                                      extra_config=credentials.accounts_file.read_text()).start()
        s3 = EmbeddedS3(work, S3_ACCESS_KEY, S3_SECRET_KEY).start()
        stack = None
        try:
            asyncio.run(prepare(cluster, credentials, s3))
            env = service_env(cluster.url, s3.endpoint, s3.credentials,
                              TERRA_NATS_CREDENTIALS_DIR=str(credentials.directory),
                              TERRA_NATS_REPLICAS="3")
            stack = ServiceStack(env, work / "logs", cwd=ROOT)
            stack.start_auth(TERRA_ARGON2_MEMORY_KIB="1024", TERRA_ARGON2_TIME_COST="1")
            stack.start_service("prompt", "prompt_service")
            # The load is a few users' back-to-back prompts: the per-user prompt rate
            # (60 a minute) would answer most of it 429, and a 429 says nothing of the
            # cluster, so the bench lifts it.
            url = stack.start_gateway(TERRA_PROMPT_RATE_LIMIT="1000000")
            rounds = asyncio.run(measure(cluster, credentials, url, args.kills))
        finally:
            if stack is not None:
                stack.stop()
            s3.stop()
            cluster.stop()
    print("\nkill of the node leading TERRA_PROMPT_COMMANDS and TERRA_EVENTS")
    print(f"{'node':>6} {'first 202 after':>18} {'first live event after':>24}")
    for node, answered, delivered in rounds:
        print(f"{node:>6} {_s(answered):>18} {_s(delivered):>24}")
    if any(None in (a, d) for _, a, d in rounds):
        sys.exit("the service never came back after a kill: no median over the other rounds")
    answered = [a for _, a, _ in rounds]
    delivered = [d for _, _, d in rounds]
    print(f"median {statistics.median(answered):>11.2f} s {statistics.median(delivered):>22.2f} s")


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


async def prepare(cluster: EmbeddedNatsCluster, credentials: Credentials, s3) -> None:
    import nats
    from minio import Minio

    operator = await nats.connect(cluster.urls, inbox_prefix=inbox_prefix(OPERATOR),
                                  nkeys_seed=str(credentials.seed_file(OPERATOR)))
    try:
        await provision(operator, replicas=3, consumers=topology.CONSUMERS)
    finally:
        await operator.drain()
    # The bucket is made with the root key, the operator's (the services may not).
    await ObjectStorage(Minio(s3.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY,
                              secure=False, region="us-east-1")).ensure_buckets()


if __name__ == "__main__":
    main()
