"""Liveness (`/health`: the process answers) and readiness (`/ready`: what the gateway
needs answers, and each job domain it is asked about has a live worker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from nats.js.errors import NotFoundError

from contracts import topology
from gateway.deps import Runtime
from gateway.problems import Problem
from gateway.runtime import GatewayRuntime
from terra.runtime.liveness import domains_served, live_workers

router = APIRouter(tags=["health"])

# `/ready` answers within a second, always: a check that has not answered by then is a
# reason, not a wait (probes and load balancers time out, and a hung check must not make
# the gateway look dead).
READY_DEADLINE_S = 0.8
CHECK_CAP_S = 10.0


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="NATS and S3 reachable, streams provisioned, workers live")
async def ready(runtime: Runtime) -> dict[str, object]:
    """200 when NATS answers with every stream provisioned, object storage answers, the
    revocation list is current, and each domain of `TERRA_READY_WORKERS` has a live worker;
    else 503 naming each reason."""
    tasks = {name: _joined(runtime, name, check) for name, check in _CHECKS.items()}
    await asyncio.wait(tasks.values(), timeout=READY_DEADLINE_S)

    required = runtime.settings.ready_workers
    reasons: list[str] = []
    workers: dict[str, int] | None = None
    for name, task in tasks.items():
        optional = name == _WORKERS and not required
        if not task.done() or task.cancelled():
            if not optional:
                reasons.append(f"{name} did not answer within {READY_DEADLINE_S} s")
        elif (error := task.exception()) is not None:
            if not optional:
                reasons.append(f"{name}: {_describe(error)}")
        elif name == _WORKERS:
            workers = task.result()
        else:
            reasons += task.result()
    if workers is not None:
        reasons += [f"no live {domain} worker" for domain in required if not workers.get(domain)]
    if not runtime.revocations.caught_up:  # tokens are checked against the bucket meanwhile
        reasons.append("the revocation list is not caught up")
    workers = {**{domain: 0 for domain in required}, **(workers or {})}
    if reasons:
        raise Problem(503, "not-ready", "; ".join(reasons), reasons=reasons, workers=workers)
    return {"status": "ready", "sockets": runtime.hub.sockets, "workers": workers}


async def _streams_missing(runtime: GatewayRuntime) -> list[str]:
    if not runtime.nc.is_connected:
        return ["not connected to NATS"]
    found = await asyncio.gather(*(runtime.js.stream_info(stream.name)
                                   for stream in topology.STREAMS), return_exceptions=True)
    for outcome in found:
        if isinstance(outcome, BaseException) and not isinstance(outcome, NotFoundError):
            raise outcome
    return [f"stream {stream.name} is not provisioned"
            for stream, outcome in zip(topology.STREAMS, found, strict=True)
            if isinstance(outcome, NotFoundError)]


async def _storage(runtime: GatewayRuntime) -> list[str]:
    await runtime.storage.ping()
    return []


async def _workers(runtime: GatewayRuntime) -> dict[str, int]:
    """Per job domain, its live and pulling workers (heartbeats expire after 6 s)."""
    return domains_served(await live_workers(runtime.js))


_WORKERS = "worker heartbeats"
_CHECKS: dict[str, Callable[[GatewayRuntime], Awaitable[Any]]] = {
    "NATS": _streams_missing, "object storage": _storage, _WORKERS: _workers,
}


def _joined(runtime: GatewayRuntime, name: str,
            check: Callable[[GatewayRuntime], Awaitable[Any]]) -> asyncio.Task:
    """The check's task: a run still going from an earlier `/ready` is joined, so a hung
    dependency costs one pending call (one thread, for object storage), not one per probe.
    A run ends within `CHECK_CAP_S` whatever happens, so a later probe starts afresh."""
    task = runtime.ready_checks.get(name)
    if task is None or task.done():
        task = asyncio.create_task(asyncio.wait_for(check(runtime), CHECK_CAP_S),
                                   name=f"ready: {name}")
        task.add_done_callback(_observe)
        runtime.ready_checks[name] = task
    return task


def _observe(task: asyncio.Task) -> None:
    """A check that ends after its callers gave up: its error is read, never left unread."""
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
