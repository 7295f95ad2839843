"""Worker liveness: each worker process rewrites its heartbeat record every few seconds;
the record expires with the workers bucket's TTL once the process stops writing it.

A heartbeat says `pulling` only while every consumer loop of the process is alive and
pulling (or busy with work) and no supervised loop is down, so a worker whose loop died
drops out of `/ready` as surely as one that was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from contracts.base import utcnow
from contracts.ids import new_id
from contracts.topology import WORKERS_KV
from contracts.workers import WorkerHeartbeat
from terra.nats.faults import BROKER_ERRORS
from terra.nats.listings import live_entries

log = logging.getLogger(__name__)


@dataclass
class WorkLoad:
    """What a worker holds right now, as its heartbeat reports it."""

    pulling: bool
    loops: dict[str, bool] = field(default_factory=dict)
    holding: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)


class Heartbeat:
    """One process's heartbeat record, rewritten every `interval_s` by `run()`."""

    def __init__(self, kv: KeyValue, service: str, domains: tuple[str, ...],
                 describe: Callable[[], WorkLoad], *, interval_s: float = 2.0) -> None:
        self._kv = kv
        self.service = service
        self.domains = domains
        self.describe = describe
        self.interval_s = interval_s
        self.worker_id = new_id()[:16]
        self.started_at = utcnow()

    @classmethod
    async def open(cls, js: JetStreamContext, service: str, domains: tuple[str, ...],
                   describe: Callable[[], WorkLoad], **options) -> Heartbeat:
        return cls(await js.key_value(WORKERS_KV.bucket), service, domains, describe, **options)

    @property
    def key(self) -> str:
        return f"{self.service}.{self.worker_id}"

    def record(self) -> WorkerHeartbeat:
        load = self.describe()
        return WorkerHeartbeat(
            worker_id=self.worker_id, service=self.service, domains=list(self.domains),
            host=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
            pulling=load.pulling, loops=load.loops, holding=load.holding[:200],
            running=load.running)

    async def beat(self) -> None:
        await self._kv.put(self.key, self.record().model_dump_json().encode())

    async def run(self) -> None:
        """Supervised: a failed write is retried at the next beat (the TTL is a few beats)."""
        while True:
            try:
                await self.beat()
            except BROKER_ERRORS as exc:
                log.warning("heartbeat not written", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(self.interval_s)

    async def withdraw(self) -> None:
        """A clean stop: gone from `/ready` now, not after the TTL."""
        with contextlib.suppress(Exception):
            await self._kv.delete(self.key)


async def live_workers(js: JetStreamContext) -> list[WorkerHeartbeat]:
    """Every worker whose heartbeat has not expired."""
    kv = await js.key_value(WORKERS_KV.bucket)
    found: list[WorkerHeartbeat] = []
    for entry in (await live_entries(kv)).values():
        if entry.value:
            with contextlib.suppress(ValueError):
                found.append(WorkerHeartbeat.model_validate_json(entry.value))
    return found


def domains_served(workers: list[WorkerHeartbeat], now: datetime | None = None,
                   stale_after_s: float = 10.0) -> dict[str, int]:
    """Per job domain, how many workers are live and pulling. Pure."""
    now = now or utcnow()
    served: dict[str, int] = {}
    for worker in workers:
        if worker.pulling and (now - worker.updated_at).total_seconds() < stale_after_s:
            for domain in worker.domains:
                served[domain] = served.get(domain, 0) + 1
    return served


async def forget(js: JetStreamContext, key: str) -> None:
    kv = await js.key_value(WORKERS_KV.bucket)
    with contextlib.suppress(KeyNotFoundError):
        await kv.delete(key)
