"""Commands from REST calls to their work queues, and waiting for what they caused; the
use cases that are one command: cancelling a job."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from faststream.nats import NatsBroker

from contracts import topology
from contracts.base import Command, Event, utcnow
from contracts.jobs import CancelJob, JobKind, JobState, JobStatus
from gateway.events import EventHub, Subscription
from gateway.refusals import JobAlreadyEnded, JobNotFound
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher

log = logging.getLogger(__name__)


def job_id_for(user_id: str, idempotency_key: str | None) -> str | None:
    """A retried request with the same `Idempotency-Key` names the same job."""
    if not idempotency_key:
        return None
    return hashlib.sha256(f"{user_id}\n{idempotency_key}".encode()).hexdigest()[:32]


class CommandSender:
    """Commands to their work queues, each publish bounded by `send_timeout_s`, and the
    events they cause, each waited for at most `wait_timeout_s`."""

    def __init__(self, broker: NatsBroker, hub: EventHub, *, send_timeout_s: float,
                 wait_timeout_s: float) -> None:
        self.broker = broker
        self.hub = hub
        self.send_timeout_s = send_timeout_s
        self.wait_timeout_s = wait_timeout_s

    async def send(self, command: Command) -> bool:
        """Publish to the command's work queue; False when the stream dropped it as a
        duplicate (same `Nats-Msg-Id` within the duplicate window: the job is already on
        its way).

        Not retried here: a publish that timed out may have been stored, and the client's
        retry (same `Idempotency-Key`, so the same message id) is deduplicated by the
        stream."""
        domain = command.subject().split(".")[2]
        ack = await self.broker.publish(
            command.model_dump_json().encode(),
            command.subject(),
            headers={"Nats-Msg-Id": command.message_id},
            correlation_id=command.correlation_id,
            stream=topology.COMMAND_STREAMS[domain].name,
            timeout=self.send_timeout_s,
        )
        return not ack.duplicate

    async def send_and_wait(
        self, user_id: str, command: Command, types: set[str], *, value: str,
        about: str = "job_id", unless_duplicate: bool = False,
    ) -> tuple[bool, dict | None]:
        """Send `command`, then wait for the first event of `types` whose `about` field is
        `value`: whether the command was new (see `send`), and the event or None after
        the wait timeout. `unless_duplicate`: a duplicate is not waited for (what it
        caused may be over already)."""
        domain = command.subject().split(".")[2]
        sub = self.hub.subscribe(user_id, domain)  # before sending: a fast answer is not missed
        try:
            fresh = await self.send(command)
        except BaseException:
            self.hub.unsubscribe(sub)
            raise
        if unless_duplicate and not fresh:
            self.hub.unsubscribe(sub)
            return fresh, None
        return fresh, await self._first_event(sub, types, about, value)

    async def _first_event(self, sub: Subscription, types: set[str], about: str,
                           value: str) -> dict | None:
        """The first event on `sub` of `types` whose `about` field is `value`, or None
        after the wait timeout; `sub` ends either way."""
        deadline = time.monotonic() + self.wait_timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), left)
                except TimeoutError:
                    return None
                payload = json.loads(event.data)
                if payload.get(about) == value and payload.get("type") in types:
                    return payload
            return None
        finally:
            self.hub.unsubscribe(sub)


def deduplicated_if_sent_again(job: JobState, stream: topology.StreamSpec,
                               margin_s: float = 30.0) -> bool:
    """Whether a retried request may publish a message about `job` again (its command, its
    `queued` event): only while the job has not started and `stream` would still drop a
    second copy as a duplicate of the first (same message id). Past that window a second
    command could run the job twice; a job still queued then has its command in the
    stream (or can be cancelled)."""
    age_s = (utcnow() - job.created_at).total_seconds()
    return (job.status is JobStatus.QUEUED and job.started_at is None
            and age_s < stream.duplicate_window_s - margin_s)


async def announce_queued(events: EventPublisher, event: Event, known: JobState | None) -> None:
    """Publish a job's one `queued` event, after its command was sent. Best effort: the
    command is on its way whatever happens here, so a failure is logged, never answered
    (a retry with the same key publishes it again under the same message id). `known`:
    the job as the request found it (None: new), so a late retry adds no second copy."""
    if known is not None and not deduplicated_if_sent_again(known, topology.EVENTS):
        return
    try:
        await events.publish(event)
    except Exception as exc:  # noqa: BLE001 - nothing may fail a request after its command
        log.warning("queued event not published; the job goes on", extra={
            "job_id": getattr(event, "job_id", None), "error": f"{type(exc).__name__}: {exc}"})


async def cancel_job(jobs: JobStore, commands: CommandSender, user_id: str, job_id: str,
                     kind: JobKind) -> None:
    """Ask the job's service to cancel it: queued, it ends at once; running, its worker
    stops within a step. Another user's job, or another kind, is not found; an ended one
    is refused."""
    job = await jobs.get(user_id, job_id, kind)
    if job is None or job.kind is not kind:
        raise JobNotFound(kind, job_id)
    if job.status.is_terminal:
        raise JobAlreadyEnded(kind, job_id, job.status)
    await commands.send(CancelJob(job_id=job_id, user_id=user_id, kind=kind))
