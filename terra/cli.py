"""The `terra` command.

  terra up                 the whole system on one machine (embedded NATS and S3 unless
                           TERRA_NATS_URL / TERRA_S3_ENDPOINT point elsewhere)
  terra run <service>      one service against the NATS and S3 in settings (production)
  terra provision          create or verify streams, consumers, KV and object buckets
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from terra.errors import ConfigurationError, ProvisioningConflict

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


def _pump(name: str, stream, width: int) -> None:
    """Prefix a child's output lines with its name."""
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def up(data_dir: Path) -> int:
    from terra.local import EmbeddedNats, EmbeddedS3, port_is_free
    from terra.settings import RuntimeSettings

    settings = RuntimeSettings(data_dir=data_dir)
    env = dict(os.environ)
    env.setdefault("TERRA_LOG_FORMAT", "text")
    env["TERRA_DATA_DIR"] = str(data_dir)
    servers = []
    try:
        if "TERRA_NATS_URL" in os.environ:
            print(f"NATS       {settings.nats_url} (external)")
        else:
            nats_server = EmbeddedNats(data_dir, **({"port": 4222} if port_is_free(4222) else {}))
            servers.append(nats_server.start())
            env["TERRA_NATS_URL"] = nats_server.url
            print(f"NATS       {nats_server.url}  (JetStream data in {data_dir / 'nats'})")
        if "TERRA_S3_ENDPOINT" in os.environ:
            print(f"S3         {settings.s3_endpoint} (external)")
        else:
            s3 = EmbeddedS3(
                data_dir,
                settings.s3_access_key.get_secret_value(),
                settings.s3_secret_key.get_secret_value(),
                **({"s3_port": 8333} if port_is_free(8333) else {}),
            )
            servers.append(s3.start())
            env["TERRA_S3_ENDPOINT"] = s3.endpoint
            print(f"S3         http://{s3.endpoint}  (objects in {data_dir / 's3'})")
    except (ConfigurationError, RuntimeError, TimeoutError) as exc:
        print(f"could not start the embedded servers: {exc}", file=sys.stderr)
        for server in reversed(servers):
            server.stop()
        return 1

    width = max(map(len, SERVICES))
    children: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def stop_all(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    for name, module in SERVICES.items():
        child = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=_pump, args=(name, child.stdout, width), daemon=True).start()
        children[name] = child
    host = env.get("TERRA_HOST", "127.0.0.1")
    port = env.get("TERRA_PORT", "8000")
    print(f"gateway    http://{host}:{port}  (API docs at /docs, WebSockets at /ws)")
    print(f"services   {', '.join(SERVICES)}; Ctrl-C stops everything")

    exit_code = 0
    while not stopping.is_set():
        for name, child in children.items():
            if child.poll() is not None:
                print(
                    f"\n!! service {name} exited with code {child.returncode}; "
                    "stopping the stack (see its output above)",
                    file=sys.stderr,
                )
                exit_code = 1
                stopping.set()
                break
        stopping.wait(0.5)

    print("stopping…")
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.shutdown_grace_s
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    for server in reversed(servers):
        server.stop()
    print("stopped")
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
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            return up(args.data_dir.resolve())
        if args.command == "run":
            return _run_service(args.service)
        return asyncio.run(_provision())
    except (ConfigurationError, ProvisioningConflict) as exc:
        print(f"terra: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
