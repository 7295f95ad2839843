"""The `terra` command.

  terra up                 the whole system on one machine (embedded NATS and S3 unless
                           TERRA_NATS_URL / TERRA_S3_ENDPOINT point elsewhere); a process
                           that dies is restarted, one that keeps dying stops it all
  terra run <service>      one service against the NATS and S3 in settings (production)
  terra provision          create or verify streams, consumers, KV and object buckets
  terra status             live workers, what each holds, and queue depths
  terra nats-credentials   NKEYs per identity and the NATS server's accounts block
                           (init, rotate <identity>, retire <identity>)
  terra storage-credentials
                           an S3 key per service identity (init --dir), and the MinIO
                           policies that limit each to its grants (policies --out)

`provision` and `status` sign in as the operator: TERRA_NATS_NKEY_FILE, or the stack that
`terra up` runs from --data-dir (its NATS address and the operator's key are there). The
S3 root key (TERRA_S3_ACCESS_KEY / TERRA_S3_SECRET_KEY) is the operator's too: `terra up`
starts the embedded S3 with it and gives each service a key of its own instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from terra.errors import ConfigurationError, ProvisioningConflict
from terra.ops.services import SERVICES, named

if TYPE_CHECKING:
    from terra.ops.servers import EmbeddedNats, EmbeddedS3
    from terra.settings import RuntimeSettings

def _run_service(name: str) -> int:
    service = named(name)
    if service is None:
        print(f"unknown service {name!r}; choose from "
              f"{', '.join(s.name for s in SERVICES)}", file=sys.stderr)
        return 2
    import runpy

    runpy.run_module(service.module, run_name="__main__", alter_sys=True)
    return 0


STACK_FILE = "stack.json"  # what `terra up` runs, for the operator's commands


def operator_settings(data_dir: Path) -> RuntimeSettings:
    """Settings from the environment; where it names no NATS, those of the stack that
    `terra up` runs from `data_dir`."""
    from terra.settings import RuntimeSettings

    stack = data_dir / STACK_FILE
    if "TERRA_NATS_URL" in os.environ or not stack.exists():
        return RuntimeSettings()
    running = json.loads(stack.read_text())
    return RuntimeSettings(nats_url=running["nats_url"], s3_endpoint=running["s3_endpoint"],
                           nats_credentials_dir=running.get("nats_credentials_dir"))


async def provision_all(settings: RuntimeSettings, *, quiet: bool = False) -> int:
    from contracts import topology
    from contracts.permissions import OPERATOR
    from terra.nats.connection import connect
    from terra.nats.provisioning import provision
    from terra.records.objects import ObjectStorage

    nc = await connect(settings, name=OPERATOR)
    try:
        report = await provision(nc, replicas=settings.nats_replicas, consumers=topology.CONSUMERS)
    finally:
        await nc.drain()
    buckets = await ObjectStorage.from_settings(settings).ensure_buckets()
    if not quiet:
        for item in report.created + [f"bucket {b}" for b in buckets]:
            print(f"created   {item}")
        for item in report.updated:
            print(f"updated   {item}")
        for item in report.unchanged:
            print(f"unchanged {item}")
    return 0


def _credentials(action: str, directory: Path, identity: str | None) -> int:
    from terra.nats.accounts import Credentials

    credentials = Credentials.ensure(directory)
    if action == "rotate":
        print(f"new key for {identity}: {credentials.rotate(identity)}")
        print("next: reload the NATS servers (nats-server --signal reload), restart "
              f"{identity}'s processes, then `terra nats-credentials retire {identity}`")
    elif action == "retire":
        for key in credentials.retire(identity):
            print(f"retired {key}")
        print("next: reload the NATS servers")
    print(f"seeds and {credentials.accounts_file.name} in {directory}")
    return 0


def _storage_credentials(action: str, directory: Path) -> int:
    from terra.credentials import S3Credentials
    from terra.ops.storage_policies import write_minio_policies

    if action == "policies":
        for path in write_minio_policies(directory):
            print(f"wrote {path}")
        return 0
    S3Credentials.ensure(directory)
    print(f"an S3 key per service identity in {directory} (existing ones kept); give "
          "MinIO the users and policies: deploy/minio/setup.sh")
    return 0


async def _status(settings: RuntimeSettings, as_json: bool) -> int:
    import nats.errors

    from contracts.jobs import JobKind
    from contracts.permissions import OPERATOR
    from terra.nats.connection import connect
    from terra.ops.status import gather

    try:
        nc = await connect(settings, name=OPERATOR, max_reconnect_attempts=0)
    except (OSError, nats.errors.Error) as exc:
        print(f"terra status: cannot reach NATS at {settings.nats_url}: {exc}", file=sys.stderr)
        return 2
    try:
        status = await gather(nc.jetstream(timeout=5.0))
    except TimeoutError:
        print("terra status: NATS did not answer; is this the operator's credential "
              "(TERRA_NATS_NKEY_FILE, or the stack's in --data-dir)?", file=sys.stderr)
        return 2
    finally:
        await nc.drain()
    print(status.as_json() if as_json else status.as_text())
    return 0 if all(status.served.get(kind) for kind in JobKind) else 3


def _embedded_servers(
    settings: RuntimeSettings, data_dir: Path, env: dict[str, str]
) -> list[EmbeddedNats | EmbeddedS3]:
    """Start NATS and S3 unless the environment points elsewhere; fill `env` with their
    addresses. The default ports are preferred; when taken, any free one does."""
    from terra.ops.servers import EmbeddedNats, EmbeddedS3, port_is_free

    started: list[EmbeddedNats | EmbeddedS3] = []
    try:
        if "TERRA_NATS_URL" in os.environ:
            print(f"NATS       {settings.nats_url} (external)")
        else:
            nats_server = EmbeddedNats(data_dir, **({"port": 4222} if port_is_free(4222) else {}))
            started.append(nats_server.start())
            env["TERRA_NATS_URL"] = nats_server.url
            # Every process signs in as itself: its NKEY is in this directory.
            env["TERRA_NATS_CREDENTIALS_DIR"] = str(nats_server.credentials.directory)
            print(f"NATS       {nats_server.url}  (JetStream data in {data_dir / 'nats'}; "
                  f"keys in {nats_server.credentials.directory})")
        if "TERRA_S3_ENDPOINT" in os.environ:
            print(f"S3         {settings.s3_endpoint} (external)")
        else:
            # The root key is the operator's (this command's settings); each service gets
            # a key of its own from the credentials directory, allowed only its grants.
            s3 = EmbeddedS3(
                data_dir,
                settings.s3_access_key.get_secret_value(),
                settings.s3_secret_key.get_secret_value(),
                **({"port": 8333} if port_is_free(8333) else {}),
            )
            started.append(s3.start())
            env["TERRA_S3_ENDPOINT"] = s3.endpoint
            env["TERRA_S3_CREDENTIALS_DIR"] = str(s3.credentials.directory)
            for key in ("TERRA_S3_ACCESS_KEY", "TERRA_S3_SECRET_KEY"):
                env.pop(key, None)
            print(f"S3         http://{s3.endpoint}  (objects in {data_dir / 's3'}; "
                  f"keys in {s3.credentials.directory})")
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return started


def _gateway_socket(env: dict[str, str]) -> socket.socket:
    """The gateway's listener, bound here and inherited by every gateway process we start:
    no other program can take the port between a check and a bind, and a restarted gateway
    serves on the same address (connections wait in the backlog meanwhile)."""
    from terra.ops.servers import listening_socket

    host = env.get("TERRA_HOST", "127.0.0.1")
    if "TERRA_PORT" in env:
        return listening_socket(host, int(env["TERRA_PORT"]))  # asked for: taken is an error
    try:
        return listening_socket(host, 8000)
    except OSError:
        return listening_socket(host, 0)


def _settings_of(env: dict[str, str]) -> RuntimeSettings:
    from terra.settings import RuntimeSettings

    return RuntimeSettings(**{key.removeprefix("TERRA_").lower(): value
                              for key, value in env.items()
                              if key.startswith("TERRA_") and key != "TERRA_LISTEN_FD"})


def report_readiness(url: str, stopping: threading.Event, *, poll_s: float = 1.0,
                     out=None) -> None:
    """Say when the stack is first ready (`/ready` answers 200), and each time that changes
    afterwards, with the gateway's reasons; silent while nothing changes."""
    import time
    import urllib.error
    import urllib.request

    out = out or sys.stdout
    # The gateway is ours, on this machine: never through an http_proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started, was_ready, said_once = time.monotonic(), None, False
    while not stopping.wait(poll_s):
        reasons: list[str] = []
        try:
            with opener.open(url, timeout=5) as answer:
                ready = answer.status == 200
        except urllib.error.HTTPError as refused:  # 503 with the reasons
            ready = False
            with refused, contextlib.suppress(ValueError):
                reasons = json.loads(refused.read() or b"{}").get("reasons") or []
        except OSError:
            ready = False
            reasons = ["the gateway is not answering"]
        if ready == was_ready or (not ready and not said_once):
            continue  # nothing new; and "not ready yet" while starting is no news
        if ready:
            when = "" if said_once else f" in {time.monotonic() - started:.0f} s"
            print(f"ready      every service answers{when} ({url})", file=out, flush=True)
        else:
            print(f"NOT READY  {'; '.join(reasons) or 'see the logs'}", file=out, flush=True)
        was_ready, said_once = ready, True


def up(data_dir: Path) -> int:
    from terra.ops.processes import ProcessSupervisor, ServiceChild
    from terra.settings import RuntimeSettings, is_loopback

    settings = RuntimeSettings(data_dir=data_dir)
    env = {k: v for k, v in os.environ.items() if k != "TERRA_LISTEN_FD"}
    env.setdefault("TERRA_LOG_FORMAT", "text")
    # The local stack on purpose: its published development keys are accepted, and the
    # gateway refuses to listen beyond loopback with them.
    env.setdefault("TERRA_PROFILE", "local")
    env["TERRA_DATA_DIR"] = str(data_dir)
    supervisor = ProcessSupervisor()
    try:
        listener = _gateway_socket(env)
    except OSError as exc:
        print(f"could not listen for the gateway: {exc}", file=sys.stderr)
        return 1
    if env["TERRA_PROFILE"] == "local" and not is_loopback(listener.getsockname()[0]):
        # The gateway would refuse it at every start: say so once, before anything runs.
        print(f"the local profile listens on loopback only, not {env.get('TERRA_HOST')}: its "
              "published development keys must not face the network", file=sys.stderr)
        listener.close()
        return 1
    try:
        for server in _embedded_servers(settings, data_dir, env):
            supervisor.watch(server)
        # Streams, consumers, buckets: created by the operator before any service starts
        # (services may only check that what they use exists), with the S3 root key.
        operator_s3 = {"TERRA_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
                       "TERRA_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value()}
        asyncio.run(provision_all(_settings_of({**env, **operator_s3}), quiet=True))
    except (ConfigurationError, ProvisioningConflict, RuntimeError, TimeoutError) as exc:
        print(f"could not start the embedded servers: {exc}", file=sys.stderr)
        supervisor.stop(grace_s=settings.shutdown_grace_s)
        listener.close()
        return 1

    stopping = threading.Event()

    def stop_all(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    host, port = listener.getsockname()[:2]
    gateway_env = {**env, "TERRA_LISTEN_FD": str(listener.fileno()), "TERRA_PORT": str(port)}
    (data_dir / STACK_FILE).write_text(json.dumps({
        "nats_url": env["TERRA_NATS_URL"], "s3_endpoint": env.get("TERRA_S3_ENDPOINT"),
        "nats_credentials_dir": env.get("TERRA_NATS_CREDENTIALS_DIR"),
        "gateway_url": f"http://{host}:{port}", "pid": os.getpid()}, indent=2))
    width = max(len(service.name) for service in SERVICES)
    logs = data_dir / "logs"
    for service in SERVICES:
        gateway = service.name == "gateway"
        supervisor.watch(ServiceChild(
            service.name, service.module, gateway_env if gateway else env, width=width,
            log_path=logs / f"{service.name}.log",
            pass_fds=(listener.fileno(),) if gateway else (),
        ).start())
    gateway_url = f"http://{host}:{port}"
    print(f"gateway    {gateway_url}  (API docs at /docs, WebSockets at /ws)")
    print(f"services   {', '.join(s.name for s in SERVICES)}; restarted when they die; "
          "Ctrl-C stops everything")
    print(f"logs       {logs}/<service>.log; here: readiness, restarts, warnings and errors",
          flush=True)
    threading.Thread(target=report_readiness, args=(gateway_url + "/ready", stopping),
                     daemon=True).start()

    exit_code = supervisor.run(stopping)
    stopping.set()  # a crash loop ends the run too: the readiness reports stop with it
    (data_dir / STACK_FILE).unlink(missing_ok=True)
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
    run_parser.add_argument("service", choices=sorted(s.name for s in SERVICES))
    commands.add_parser("provision", help="create or verify streams, KV and buckets")
    status_parser = commands.add_parser(
        "status", help="live workers, what each holds, queue depths (exit 3: a domain has "
        "no live worker)")
    status_parser.add_argument("--json", action="store_true")
    credentials_parser = commands.add_parser(
        "nats-credentials", help="create NKEYs (kept when they exist), rotate or retire one, "
        "and render the server's accounts.conf")
    credentials_parser.add_argument("action", choices=["init", "rotate", "retire"])
    credentials_parser.add_argument("identity", nargs="?")
    credentials_parser.add_argument("--dir", type=Path, required=True)
    storage_parser = commands.add_parser(
        "storage-credentials", help="create an S3 key per service identity (kept when they "
        "exist), or render the MinIO policies that limit each to what its code uses")
    storage_parser.add_argument("action", choices=["init", "policies"])
    storage_target = storage_parser.add_mutually_exclusive_group(required=True)
    storage_target.add_argument("--dir", type=Path, help="init: the keys' directory")
    storage_target.add_argument("--out", type=Path, help="policies: where to write them")
    for sub in (status_parser, commands.choices["provision"]):
        sub.add_argument("--data-dir", type=Path,
                         default=Path(os.environ.get("TERRA_DATA_DIR", ".terra")))
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            return up(args.data_dir.resolve())
        if args.command == "run":
            return _run_service(args.service)
        if args.command == "status":
            return asyncio.run(_status(operator_settings(args.data_dir), args.json))
        if args.command == "nats-credentials":
            if args.action != "init" and not args.identity:
                parser.error(f"{args.action} needs an identity")
            return _credentials(args.action, args.dir, args.identity)
        if args.command == "storage-credentials":
            if (args.action == "init") != (args.dir is not None):
                parser.error("storage-credentials init takes --dir, policies takes --out")
            return _storage_credentials(args.action, args.dir or args.out)
        return asyncio.run(provision_all(operator_settings(args.data_dir)))
    except (ConfigurationError, ProvisioningConflict) as exc:
        print(f"terra: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
