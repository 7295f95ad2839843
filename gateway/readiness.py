"""Readiness: what the gateway needs answers (NATS with every stream provisioned, object
storage, the revocation list caught up), and each job domain it is asked about has a live
worker.

`check` answers within a second, always: a check that has not answered by then is a
reason, not a wait (probes and load balancers time out, and a hung check must not make
the gateway look dead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts import topology
from contracts.permissions import identities
from gateway.events import EventHub
from terra.records.objects import ObjectStorage
from terra.records.revocations import RevocationWatch
from terra.runtime.liveness import domains_served, live_workers

# The streams the gateway uses (and may see): another service's own, it may not read.
GATEWAY_STREAMS = tuple(identities()[topology.GATEWAY].streams)

READY_DEADLINE_S = 0.8
CHECK_CAP_S = 10.0
_WORKERS = "worker heartbeats"


@dataclass(frozen=True)
class ReadinessReport:
    reasons: list[str]  # none: ready
    workers: dict[str, int]  # live workers per domain: each required one, 0 if none
    sockets: int


class Readiness:
    def __init__(self, *, nc: NatsClient, js: JetStreamContext, storage: ObjectStorage,
                 revocations: RevocationWatch, hub: EventHub,
                 required_workers: list[str]) -> None:
        self.nc = nc
        self.js = js
        self.storage = storage
        self.revocations = revocations
        self.hub = hub
        self.required_workers = required_workers  # `[]`: the gateway's own dependencies only
        # Checks still running, by name: a slow one is joined, not started again.
        self.running: dict[str, asyncio.Task] = {}

    async def check(self) -> ReadinessReport:
        checks: dict[str, Callable[[], Awaitable[Any]]] = {
            "NATS": self._streams_missing, "object storage": self._storage,
            _WORKERS: self._workers}
        tasks = {name: self._joined(name, check) for name, check in checks.items()}
        await asyncio.wait(tasks.values(), timeout=READY_DEADLINE_S)

        required = self.required_workers
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
            reasons += [f"no live {domain} worker" for domain in required
                        if not workers.get(domain)]
        if not self.revocations.caught_up:  # tokens are checked against the bucket meanwhile
            reasons.append("the revocation list is not caught up")
        workers = {**{domain: 0 for domain in required}, **(workers or {})}
        return ReadinessReport(reasons, workers, self.hub.sockets)

    def stop(self) -> None:
        for task in self.running.values():
            task.cancel()

    async def _streams_missing(self) -> list[str]:
        if not self.nc.is_connected:
            return ["not connected to NATS"]
        streams = GATEWAY_STREAMS
        found = await asyncio.gather(*(self.js.stream_info(stream.name)
                                       for stream in streams),
                                     return_exceptions=True)
        for outcome in found:
            if isinstance(outcome, BaseException) and not isinstance(outcome, NotFoundError):
                raise outcome
        return [f"stream {stream.name} is not provisioned"
                for stream, outcome in zip(streams, found, strict=True)
                if isinstance(outcome, NotFoundError)]

    async def _storage(self) -> list[str]:
        await self.storage.ping()
        return []

    async def _workers(self) -> dict[str, int]:
        """Per job domain, its live and pulling workers (heartbeats expire after 6 s)."""
        return domains_served(await live_workers(self.js))

    def _joined(self, name: str, check: Callable[[], Awaitable[Any]]) -> asyncio.Task:
        """The check's task: a run still going from an earlier `check` is joined, so a hung
        dependency costs one pending call (one thread, for object storage), not one per
        probe. A run ends within `CHECK_CAP_S` whatever happens, so a later probe starts
        afresh."""
        task = self.running.get(name)
        if task is None or task.done():
            task = asyncio.create_task(asyncio.wait_for(check(), CHECK_CAP_S),
                                       name=f"ready: {name}")
            task.add_done_callback(_observe)
            self.running[name] = task
        return task


def _observe(task: asyncio.Task) -> None:
    """A check that ends after its callers gave up: its error is read, never left unread."""
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
