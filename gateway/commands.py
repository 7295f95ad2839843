"""Commands from REST calls to their work queues, and waiting for what they caused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from fastapi import Response
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker

from contracts import topology
from contracts.base import Command, Event, utcnow
from contracts.jobs import CancelJob, JobKind, JobState, JobStatus
from gateway.events import EventHub
from gateway.problems import Problem
from terra.nats.events import EventPublisher

log = logging.getLogger(__name__)


def job_id_for(user_id: str, idempotency_key: str | None) -> str | None:
    """A retried request with the same `Idempotency-Key` names the same job."""
    if not idempotency_key:
        return None
    return hashlib.sha256(f"{user_id}\n{idempotency_key}".encode()).hexdigest()[:32]


async def send(broker: NatsBroker, command: Command, *, timeout_s: float) -> bool:
    """Publish to the command's work queue; False when the stream dropped it as a duplicate
    (same `Nats-Msg-Id` within the duplicate window: the job is already on its way).

    Not retried here: a publish that timed out may have been stored, and the client's retry
    (same `Idempotency-Key`, so the same message id) is deduplicated by the stream."""
    domain = command.subject().split(".")[2]
    ack = await broker.publish(
        command.model_dump_json().encode(),
        command.subject(),
        headers={"Nats-Msg-Id": command.message_id},
        correlation_id=command.correlation_id,
        stream=topology.COMMAND_STREAMS[domain].name,
        timeout=timeout_s,
    )
    return not ack.duplicate


async def wait_for_event(
    hub: EventHub, user_id: str, domain: str, job_id: str, types: set[str], timeout_s: float,
    subscription=None, *, about: str = "job_id",
) -> dict | None:
    """The first event of `types` whose `about` field is `job_id` (a job's, by default),
    or None after `timeout_s`.

    Pass a subscription made before the command was sent, or the event may come first.
    """
    sub = subscription or hub.subscribe(user_id, domain)
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(sub.queue.get(), left)
            except TimeoutError:
                return None
            payload = json.loads(event.data)
            if payload.get(about) == job_id and payload.get("type") in types:
                return payload
        return None
    finally:
        hub.unsubscribe(sub)


async def cancel_job(runtime, user_id: str, job_id: str, kind: JobKind) -> dict[str, str]:
    """Ask the job's service to cancel it: queued, it ends at once; running, its worker
    stops within a step. Another user's job, or another kind, is not found."""
    job = await runtime.jobs.get(user_id, job_id, kind)
    if job is None or job.kind is not kind:
        raise Problem(404, "not-found", f"No {kind.value} {job_id}.")
    if job.status.is_terminal:
        raise Problem(409, "conflict", f"The {kind.value} {job_id} has already "
                      f"{job.status.value}.")
    await send(runtime.broker, CancelJob(job_id=job_id, user_id=user_id, kind=kind),
               timeout_s=runtime.settings.nats_request_timeout_s)
    return {"job_id": job_id, "status": "cancel_requested"}


async def ask_owner(runtime, user_id: str, command: Command, *, done: str,
                    about: str, value: str) -> Response:
    """Send `command` to the service that owns the record, and answer 204 once its `done`
    event (whose `about` field is `value`) arrives, or 202 if it takes longer than the
    wait timeout (it is on its way: the event will reach the user's sockets)."""
    domain = command.subject().split(".")[2]
    sub = runtime.hub.subscribe(user_id, domain)  # before sending: a fast answer is not missed
    try:
        await send(runtime.broker, command, timeout_s=runtime.settings.nats_request_timeout_s)
    except BaseException:
        runtime.hub.unsubscribe(sub)
        raise
    if await wait_for_event(runtime.hub, user_id, domain, value, {done},
                            runtime.settings.wait_timeout_s, sub, about=about) is None:
        return JSONResponse({about: value, "status": "deleting"}, status_code=202)
    return Response(status_code=204)


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
