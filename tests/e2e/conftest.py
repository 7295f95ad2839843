"""The whole stack as real processes: auth_service and gateways, over the session's
nats-server and S3, reached over HTTP and WebSocket like a client would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from terra.local import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def spawn(self, name: str, module: str, **extra_env: str) -> ServiceProcess:
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = ServiceProcess(name, proc, log_path)
        self.processes.append(process)
        return process

    def start_auth(self, **extra_env: str) -> ServiceProcess:
        process = self.spawn("auth", "auth_service", **extra_env)
        _wait_for_log(process, "started", timeout_s=30)
        return process

    def start_gateway(self, *, wait_for: str = "/ready", **extra_env: str) -> str:
        port = free_port()
        process = self.spawn("gateway", "gateway", TERRA_PORT=str(port), **extra_env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{process.log()}")
            try:
                if httpx.get(f"{url}{wait_for}", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready:\n{process.log()}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _wait_for_log(process: ServiceProcess, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        if needle in process.log_path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{process.name} did not log {needle!r}:\n{process.log()}")


@pytest.fixture(scope="session")
def stack_env(nats_url, s3, google_keys) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TERRA_")},
        "TERRA_NATS_URL": nats_url,
        "TERRA_S3_ENDPOINT": s3.endpoint,
        "TERRA_S3_ACCESS_KEY": s3.access_key,
        "TERRA_S3_SECRET_KEY": s3.secret_key,
        "TERRA_LOG_FORMAT": "text",
        "TERRA_GOOGLE_CLIENT_IDS": '["terra-web.apps.example", "terra-ios.apps.example"]',
        "TERRA_GOOGLE_CERTS_URL": google_keys.certs_url,
        # Login limits stay on but roomy enough for a test session's traffic.
        "TERRA_LOGIN_MAX_FAILURES_PER_ADDRESS": "10000",
    }


@pytest.fixture(scope="session")
def stack(stack_env, tmp_path_factory) -> Stack:
    stack = Stack(stack_env, tmp_path_factory.mktemp("stack-logs"))
    stack.start_auth()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def gateway_url(stack) -> str:
    return stack.start_gateway()
