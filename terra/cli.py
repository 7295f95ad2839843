"""The `terra` command.

  terra up                 the whole system on one machine (embedded NATS and S3 unless
                           TERRA_NATS_URL / TERRA_S3_ENDPOINT point elsewhere); a process
                           that dies is restarted, one that keeps dying stops it all
  terra run <service>      one service against the NATS and S3 in settings (production)
  terra provision          create or verify streams, consumers, KV and object buckets
  terra status             live workers, what each holds, and queue depths
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from terra.errors import ConfigurationError, ProvisioningConflict

if TYPE_CHECKING:
    from terra.local import EmbeddedNats, EmbeddedS3
    from terra.settings import RuntimeSettings

# Services that exist, in start order (the gateway last, once its backends listen).
SERVICES: dict[str, str] = {
    "auth": "auth_service",
    "prompt": "prompt_service",
    "trainer": "trainer_service",
    "generator": "generator_service",
    "gateway": "gateway",
}


def _run_service(name: str) -> int:
    module = SERVICES.get(name)
    if module is None:
        print(f"unknown service {name!r}; choose from {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    import runpy

    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


async def _provision() -> int:
    import nats

    from contracts import topology
    from terra.provisioning import provision
    from terra.settings import RuntimeSettings
    from terra.storage import ObjectStorage

    settings = RuntimeSettings()
    nc = await nats.connect(settings.nats_servers)
    try:
        report = await provision(nc, replicas=settings.nats_replicas, consumers=topology.CONSUMERS)
    finally:
        await nc.drain()
    buckets = await ObjectStorage.from_settings(settings).ensure_buckets()
    for item in report.created + [f"bucket {b}" for b in buckets]:
        print(f"created   {item}")
    for item in report.unchanged:
        print(f"unchanged {item}")
    return 0


async def _status(as_json: bool) -> int:
    import nats

    from terra.settings import RuntimeSettings
    from terra.status import gather

    settings = RuntimeSettings()
    nc = await nats.connect(settings.nats_servers, connect_timeout=settings.nats_connect_timeout_s,
                            max_reconnect_attempts=0)
    try:
        status = await gather(nc.jetstream(timeout=5.0))
    finally:
        await nc.drain()
    print(status.as_json() if as_json else status.as_text())
    return 0 if all(status.served.get(d) for d in ("prompt", "training", "generation")) else 3


def _embedded_servers(
    settings: RuntimeSettings, data_dir: Path, env: dict[str, str]
) -> list[EmbeddedNats | EmbeddedS3]:
    """Start NATS and S3 unless the environment points elsewhere; fill `env` with their
    addresses. The default ports are preferred; when taken, any free one does."""
    from terra.local import EmbeddedNats, EmbeddedS3, port_is_free

    started: list[EmbeddedNats | EmbeddedS3] = []
    try:
        if "TERRA_NATS_URL" in os.environ:
            print(f"NATS       {settings.nats_url} (external)")
        else:
            nats_server = EmbeddedNats(data_dir, **({"port": 4222} if port_is_free(4222) else {}))
            started.append(nats_server.start())
            env["TERRA_NATS_URL"] = nats_server.url
            print(f"NATS       {nats_server.url}  (JetStream data in {data_dir / 'nats'})")
        if "TERRA_S3_ENDPOINT" in os.environ:
            print(f"S3         {settings.s3_endpoint} (external)")
        else:
            s3 = EmbeddedS3(
                data_dir,
                settings.s3_access_key.get_secret_value(),
                settings.s3_secret_key.get_secret_value(),
                **({"port": 8333} if port_is_free(8333) else {}),
            )
            started.append(s3.start())
            env["TERRA_S3_ENDPOINT"] = s3.endpoint
            print(f"S3         http://{s3.endpoint}  (objects in {data_dir / 's3'})")
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return started


def _gateway_socket(env: dict[str, str]) -> socket.socket:
    """The gateway's listener, bound here and inherited by every gateway process we start:
    no other program can take the port between a check and a bind, and a restarted gateway
    serves on the same address (connections wait in the backlog meanwhile)."""
    from terra.local import listening_socket

    host = env.get("TERRA_HOST", "127.0.0.1")
    if "TERRA_PORT" in env:
        return listening_socket(host, int(env["TERRA_PORT"]))  # asked for: taken is an error
    try:
        return listening_socket(host, 8000)
    except OSError:
        return listening_socket(host, 0)


def up(data_dir: Path) -> int:
    from terra.processes import ProcessSupervisor, ServiceChild
    from terra.settings import RuntimeSettings

    settings = RuntimeSettings(data_dir=data_dir)
    env = {k: v for k, v in os.environ.items() if k != "TERRA_LISTEN_FD"}
    env.setdefault("TERRA_LOG_FORMAT", "text")
    env["TERRA_DATA_DIR"] = str(data_dir)
    supervisor = ProcessSupervisor()
    try:
        listener = _gateway_socket(env)
    except OSError as exc:
        print(f"could not listen for the gateway: {exc}", file=sys.stderr)
        return 1
    try:
        for server in _embedded_servers(settings, data_dir, env):
            supervisor.watch(server)
    except (ConfigurationError, RuntimeError, TimeoutError) as exc:
        print(f"could not start the embedded servers: {exc}", file=sys.stderr)
        listener.close()
        return 1

    stopping = threading.Event()

    def stop_all(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    host, port = listener.getsockname()[:2]
    gateway_env = {**env, "TERRA_LISTEN_FD": str(listener.fileno()), "TERRA_PORT": str(port)}
    width = max(map(len, SERVICES))
    for name, module in SERVICES.items():
        gateway = name == "gateway"
        supervisor.watch(ServiceChild(
            name, module, gateway_env if gateway else env, width=width,
            pass_fds=(listener.fileno(),) if gateway else (),
        ).start())
    print(f"gateway    http://{host}:{port}  (API docs at /docs, WebSockets at /ws)")
    print(f"services   {', '.join(SERVICES)}; restarted when they die; Ctrl-C stops everything",
          flush=True)

    exit_code = supervisor.run(stopping)
    print("stopping…", flush=True)
    supervisor.stop(grace_s=settings.shutdown_grace_s)
    listener.close()
    print("stopped", flush=True)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="terra", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the whole system locally")
    up_parser.add_argument("--data-dir", type=Path,
                           default=Path(os.environ.get("TERRA_DATA_DIR", ".terra")))
    run_parser = commands.add_parser("run", help="run one service")
    run_parser.add_argument("service", choices=sorted(SERVICES))
    commands.add_parser("provision", help="create or verify streams, KV and buckets")
    status_parser = commands.add_parser(
        "status", help="live workers, what each holds, queue depths (exit 3: a domain has "
        "no live worker)")
    status_parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            return up(args.data_dir.resolve())
        if args.command == "run":
            return _run_service(args.service)
        if args.command == "status":
            return asyncio.run(_status(args.json))
        return asyncio.run(_provision())
    except (ConfigurationError, ProvisioningConflict) as exc:
        print(f"terra: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
