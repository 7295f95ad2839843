"""Everything a request handler may use, built once per process in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from gateway.auth_client import AuthClient
from gateway.config import GatewaySettings
from gateway.events import EventHub
from gateway.security import TokenVerifier
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from terra.records.rate_limits import SlidingWindowLimit
from terra.records.revocations import RevocationWatch


@dataclass
class GatewayRuntime:
    settings: GatewaySettings
    broker: NatsBroker
    nc: NatsClient
    js: JetStreamContext  # every call bounded by `settings.nats_request_timeout_s`
    auth: AuthClient
    tokens: TokenVerifier
    hub: EventHub
    storage: ObjectStorage
    jobs: JobStore  # read under the caller's id: another user's job finds nothing
    models: ModelStore
    images: ImageStore
    generation_slots: QueueSlots
    events: EventPublisher  # a request's events: retried briefly through a broker fault
    revocations: RevocationWatch  # every user's last revocation, kept current
    prompt_rate: SlidingWindowLimit  # prompt optimisations per user, across gateways
    # `/ready`'s checks still running, by name: a slow one is joined, not started again.
    ready_checks: dict[str, asyncio.Task] = field(default_factory=dict)
