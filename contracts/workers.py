"""Worker liveness: what each worker process says about itself, every few seconds.

Records live in the workers KV bucket under `<service>.<worker_id>` and expire with the
bucket's TTL, so a worker that stops (killed, hung, partitioned) drops out on its own.
The gateway's `/ready` and `terra status` read them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from contracts.base import Model, utcnow
from contracts.ids import Id


class WorkerHeartbeat(Model):
    type: Literal["worker.heartbeat.v1"] = "worker.heartbeat.v1"
    worker_id: Id
    service: str = Field(max_length=64)
    domains: list[str] = Field(description="The job kinds this worker takes.")
    host: str = Field(max_length=255)
    pid: int
    started_at: AwareDatetime
    updated_at: AwareDatetime = Field(default_factory=utcnow)
    pulling: bool = Field(description="Every consumer loop is alive and pulling or busy.")
    loops: dict[str, bool] = Field(default_factory=dict,
                                   description="Each supervised loop: running or not.")
    holding: list[Id] = Field(default_factory=list, description="Jobs it holds, waiting.")
    running: list[Id] = Field(default_factory=list, description="Jobs it is working on.")
