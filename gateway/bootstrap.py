"""The gateway's one wiring place: its parts (stores, clients, the event hub, limits, use
cases) from settings and connections. `build_parts` takes every dependency, so tests pass
fakes there; `bootstrap` connects and opens the real ones for the process's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts import topology
from contracts.jobs import JobKind
from gateway.admission.generation import GenerationAdmission
from gateway.admission.training import TrainingAdmission
from gateway.auth_client import AuthClient
from gateway.commands import CommandSender
from gateway.config import GatewaySettings
from gateway.events import EventHub
from gateway.notifier_client import NotifierClient
from gateway.readiness import Readiness
from gateway.security import TokenVerifier
from gateway.tickets import WsTickets
from terra.errors import StorageError
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.nats.connection import build_broker, jetstream
from terra.nats.events import EventPublisher
from terra.nats.provisioning import require_provisioned
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from terra.records.rate_limits import SlidingWindowLimit, Window
from terra.records.revocations import Revocations, RevocationWatch
from terra.runtime.supervise import Supervisor

log = logging.getLogger(__name__)


@dataclass
class GatewayParts:
    """What the routes use, built once per process and kept on `app.state.parts`. A route
    takes the one or two parts it uses through `gateway.deps`, never this whole."""

    settings: GatewaySettings
    auth: AuthClient
    token_verifier: TokenVerifier
    hub: EventHub
    revocations: RevocationWatch  # every user's last revocation, kept current
    storage: ObjectStorage
    jobs: JobStore  # read under the caller's id: another user's job finds nothing
    models: ModelStore
    images: ImageStore
    commands: CommandSender
    prompt_rate: SlidingWindowLimit  # prompt optimisations per user, across gateways
    generation: GenerationAdmission
    training: TrainingAdmission
    readiness: Readiness
    tickets: WsTickets | None = None  # WebSocket tickets, redeemable on every gateway
    notifier: NotifierClient | None = None  # notifier_service, asked over request/reply


def build_parts(
    settings: GatewaySettings, *, broker: NatsBroker, nc: NatsClient, js: JetStreamContext,
    auth: AuthClient, revocations: RevocationWatch, hub: EventHub, storage: ObjectStorage,
    jobs: JobStore, models: ModelStore, images: ImageStore, generation_slots: QueueSlots,
    events: EventPublisher, prompt_rate: SlidingWindowLimit, tickets: WsTickets | None = None,
    notifier: NotifierClient | None = None,
) -> GatewayParts:
    commands = CommandSender(broker, hub, send_timeout_s=settings.nats_request_timeout_s,
                             wait_timeout_s=settings.wait_timeout_s)
    return GatewayParts(
        settings=settings, auth=auth,
        token_verifier=TokenVerifier(auth, settings.keys_refresh_min_interval_s,
                                     revocations),
        hub=hub, revocations=revocations, storage=storage, jobs=jobs, models=models,
        images=images, commands=commands, prompt_rate=prompt_rate,
        generation=GenerationAdmission(jobs=jobs, models=models, slots=generation_slots,
                                       commands=commands, events=events, js=js,
                                       cap=settings.max_generations_per_user),
        training=TrainingAdmission(jobs=jobs, models=models, storage=storage,
                                   commands=commands, events=events, js=js),
        readiness=Readiness(nc=nc, js=js, storage=storage, revocations=revocations, hub=hub,
                            required_workers=settings.ready_workers),
        tickets=tickets, notifier=notifier,
    )


@asynccontextmanager
async def bootstrap(settings: GatewaySettings) -> AsyncIterator[GatewayParts]:
    """The parts over NATS and object storage, while the context lasts; on the way out the
    readiness checks, the event and revocation loops and the connection stop."""
    async with AsyncExitStack() as stack:
        broker = build_broker(settings, name=topology.GATEWAY)
        await broker.start()  # no subscribers: connects, for publish and request/reply
        stack.push_async_callback(broker.stop)
        nc = broker.connection
        # Creating streams, consumers and buckets is `terra provision`'s (the operator's):
        # the gateway's credential may only read their configuration. It provisions every
        # consumer, so a command accepted before its worker first starts waits in one.
        await require_provisioned(nc, topology.GATEWAY)
        # Its own key, allowed only what contracts.storage_access grants the gateway: the
        # bucket is `terra provision`'s to create.
        storage = ObjectStorage.from_settings(settings, topology.GATEWAY)
        try:
            await storage.ping()
        except StorageError as exc:  # /ready reports it; the gateway still serves auth
            log.warning("object storage not ready", extra={"error": str(exc)})
        auth = AuthClient(broker, settings.auth_timeout_s)
        # Requests wait for NATS a bounded time (nats-py's default is 5 s per call, and a
        # stream leader election lasts seconds): then they answer 503, never hang.
        js = jetstream(nc, topology.GATEWAY, timeout=settings.nats_request_timeout_s)
        supervisor = Supervisor()
        stack.push_async_callback(supervisor.stop)
        hub = EventHub(nc, js, settings.ws_queue_size, supervisor=supervisor)
        # Revoked sessions (deleted accounts, "sign out everywhere"), from every gateway's
        # watch of one bucket: their tokens are refused and their sockets here closed.
        revocations = RevocationWatch(nc, js, await Revocations.open(js))
        revocations.on_revoked(
            lambda user_id, at: hub.end_sessions(user_id, issued_up_to=at.timestamp()))
        supervisor.start("revocation-watch", revocations.run)
        await hub.start()
        await revocations.wait_caught_up(5.0)  # else tokens are checked against the bucket
        list_timeout_s = 2 * settings.nats_request_timeout_s
        parts = build_parts(
            settings, broker=broker, nc=nc, js=js, auth=auth, revocations=revocations,
            hub=hub, storage=storage,
            jobs=await JobStore.open(js, list_timeout_s=list_timeout_s),
            models=await ModelStore.open(js, list_timeout_s=list_timeout_s),
            images=await ImageStore.open(js, list_timeout_s=list_timeout_s),
            generation_slots=await QueueSlots.open(js, JobKind.GENERATION.value),
            events=EventPublisher(js, retry_for_s=settings.nats_request_timeout_s,
                                  ack_timeout_s=settings.nats_request_timeout_s),
            prompt_rate=await SlidingWindowLimit.open(
                js, topology.RATE_LIMITS_KV.bucket,
                Window(settings.prompt_rate_limit, settings.prompt_rate_window_s)),
            tickets=await WsTickets.open(js, settings.ws_ticket_ttl_s),
            # Its answers wait as long as auth_service's (both look things up in KV).
            notifier=NotifierClient(broker, settings.notifier_timeout_s),
        )
        stack.callback(parts.readiness.stop)
        yield parts
