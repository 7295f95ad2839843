"""Everything a request handler may use, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from gateway.auth_client import AuthClient
from gateway.config import GatewaySettings
from gateway.events import EventHub
from gateway.security import TokenVerifier
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
    jobs: KeyValue
