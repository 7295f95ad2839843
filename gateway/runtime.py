"""Everything a request handler may use, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient

from contracts.jobs import JobState
from gateway.auth_client import AuthClient
from gateway.config import GatewaySettings
from gateway.events import EventHub
from gateway.security import TokenVerifier
from terra.images import ImageStore
from terra.jobs import JobStore
from terra.models import ModelStore
from terra.slots import QueueSlots
from terra.storage import ObjectStorage


@dataclass
class GatewayRuntime:
    settings: GatewaySettings
    broker: NatsBroker
    nc: NatsClient
    auth: AuthClient
    tokens: TokenVerifier
    hub: EventHub
    storage: ObjectStorage
    jobs: JobStore
    models: ModelStore
    images: ImageStore
    generation_slots: QueueSlots

    async def job(self, job_id: str, user_id: str) -> JobState | None:
        """The job if it belongs to `user_id`; others' jobs are indistinguishable from none."""
        job = await self.jobs.get(job_id)
        return job if job is not None and job.user_id == user_id else None
