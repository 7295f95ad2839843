"""Services as processes against given servers: what the end-to-end tests and the benches
run (`ServiceStack`), and the environment that points a service at them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from terra.credentials import S3Credentials, S3Key
from terra.ops.servers import LOOPBACK, LocalServer, free_port


def s3_env(keys: S3Credentials | S3Key) -> dict[str, str]:
    """How processes sign S3 requests: each with its own key from a credentials directory,
    or all with one key (an S3 whose identities Terra does not manage)."""
    if isinstance(keys, S3Credentials):
        return {"TERRA_S3_CREDENTIALS_DIR": str(keys.directory)}
    return {"TERRA_S3_ACCESS_KEY": keys.access_key, "TERRA_S3_SECRET_KEY": keys.secret_key}


def service_env(
    nats_url: str, s3_endpoint: str, s3_keys: S3Credentials | S3Key, **extra: str
) -> dict[str, str]:
    """This process's environment without TERRA_ settings, pointed at the given servers."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERRA_")}
    return {
        **base,
        "TERRA_PROFILE": "local",  # chosen, not defaulted: the local stack's published keys
        "TERRA_NATS_URL": nats_url,
        "TERRA_S3_ENDPOINT": s3_endpoint,
        **s3_env(s3_keys),
        **extra,
    }


@dataclass
class ServiceProcess:
    """One service (`python -m <module>`) running as its own process, output to a file."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    def log(self, tail_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail_chars:]

    def log_size(self) -> int:
        """Bytes written to its log so far (0 before it made the file)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, needle: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            if needle in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not log {needle!r}:\n{self.log()}")

    def wait_for_http(self, url: str, timeout_s: float = 30.0) -> None:
        """Until `url` answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not answering {url}:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up, like a crash or an out-of-memory kill."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 15.0) -> None:
        LocalServer(self.name, self.proc, self.log_path).stop(timeout_s)


@dataclass
class ServiceStack:
    """Services as processes against given servers: what tests/e2e and bench/ run."""

    env: dict[str, str]
    log_dir: Path
    cwd: Path | None = None
    processes: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        STACKS.append(self)

    def spawn(self, name: str, module: str, **extra_env: str) -> ServiceProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=self.cwd,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = ServiceProcess(name, proc, log_path)
        self.processes.append(process)
        return process

    def start_service(self, name: str, module: str, **extra_env: str) -> ServiceProcess:
        """A NATS-driven service, once FastStream says it has started."""
        process = self.spawn(name, module, **extra_env)
        process.wait_for_log("started")
        return process

    def start_auth(self, **extra_env: str) -> ServiceProcess:
        return self.start_service("auth", "auth_service", **extra_env)

    def start_gateway(self, *, wait_for: str = "/ready", **extra_env: str) -> str:
        """A gateway on a free port; returns its base URL once `wait_for` answers 200.

        Its `/ready` requires no live worker unless `TERRA_READY_WORKERS` is given (here or
        in the stack's env): tests and benches start their workers when they need them,
        often after the gateway."""
        if "TERRA_READY_WORKERS" not in {**self.env, **extra_env}:
            extra_env["TERRA_READY_WORKERS"] = "[]"
        port = free_port()
        process = self.spawn("gateway", "gateway", TERRA_PORT=str(port), **extra_env)
        url = f"http://{LOOPBACK}:{port}"
        process.wait_for_http(url + wait_for)
        return url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


# Every stack made in this Python process, oldest first: a failed test's report names the
# logs of the services it ran with (tests/e2e/conftest.py), whichever fixture made them.
STACKS: list[ServiceStack] = []


def service_processes() -> list[ServiceProcess]:
    """Every service process any stack of this Python process started, oldest first."""
    return [process for stack in STACKS for process in stack.processes]
