"""The generation worker's loop: commands pulled into a fair window (`scheduling.Window`),
positions announced as they change, batches served one at a time.

Held commands stay unacked, kept alive by `in_progress()` heartbeats; a worker that dies
hands them back to the stream after `ack_wait`, and one that stops cleanly hands them back
at once. The window lives in this object, so a loop restarted by the supervisor keeps it
(and burns no delivery). Broker faults are waited out; positions are best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from contracts.generation import GenerateImage, GenerationQueuePositionChanged
from contracts.jobs import FailureCode, JobKind
from contracts.topology import GENERATION_WORKERS
from generator_service.jobs import ref_of
from generator_service.scheduling import QueueEntry, Window, compatible
from terra.backoff import retry_delay_s
from terra.jobs.lifecycle import JobFailure, JobLifecycle, fields_of, ref_from_raw
from terra.jobs.store import JobStore
from terra.nats.events import EventPublisher
from terra.nats.faults import BROKER_ERRORS
from terra.runtime.liveness import WorkLoad
from terra.runtime.worker import Puller, settle_quietly

if TYPE_CHECKING:  # the handlers bring torch; the loop itself needs none of it
    from generator_service.handlers import GeneratorHandlers

log = logging.getLogger(__name__)


@dataclass
class Held:
    msg: Msg  # unacked while held
    command: GenerateImage


class FairWorker:
    """Takes commands in and generates batches through `handlers`; ends or requeues a
    batch that raised through `lifecycle`; reads `jobs` and publishes positions with
    `events`. A loop carries at most `batch_max_images` images; `queue_window` commands
    are held, each kept alive every `heartbeat_s`."""

    def __init__(self, js: JetStreamContext, handlers: GeneratorHandlers,
                 lifecycle: JobLifecycle, *, jobs: JobStore, events: EventPublisher,
                 queue_window: int, batch_max_images: int, heartbeat_s: float,
                 fetch_timeout_s: float = 1.0, stale_after_s: float = 10.0) -> None:
        self.js = js
        self.handlers = handlers
        self.lifecycle = lifecycle
        self.jobs = jobs
        self.events = events
        self.window: Window[Held] = Window(
            queue_window, batch_max_images, images=lambda held: held.command.num_images,
            compatible=lambda a, b: compatible(a.command, b.command))
        self.heartbeat_s = heartbeat_s
        self.fetch_timeout_s = fetch_timeout_s
        self.stale_after_s = stale_after_s
        self.batch: list[Held] = []
        self.stopping = asyncio.Event()
        self._puller = Puller(js, GENERATION_WORKERS, self.stopping)
        self._announcements = itertools.count()

    # --- what the service runs ------------------------------------------------------------

    async def run(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(0)  # a fetch that never suspends must not starve the loop
            await self._fill()
            await self._announce_positions()
            if self.stopping.is_set():
                break  # `stop()` hands the held commands back; none may start now
            batch = self.window.next_batch()
            if batch:
                await self._serve([queued.item for queued in batch])

    async def keep_alive(self) -> None:
        """`in_progress()` for everything held or running, well within ack_wait."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for held in [q.item for q in self.window.held()] + self.batch:
                try:
                    await held.msg.in_progress()
                except BROKER_ERRORS as exc:  # retried at the next beat; ack_wait spans several
                    log.warning("heartbeat failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    @property
    def last_pull(self) -> float:
        return self._puller.last_pull

    def workload(self) -> WorkLoad:
        fresh = time.monotonic() - self.last_pull < self.stale_after_s
        return WorkLoad(pulling=not self.stopping.is_set() and (fresh or bool(self.batch)),
                        holding=[q.job_id for q in self.window.held()],
                        running=[held.command.job_id for held in self.batch])

    async def stop(self, grace_s: float) -> None:
        """Finish the batch in hand (within `grace_s`), hand the held commands back."""
        self.stopping.set()
        deadline = time.monotonic() + grace_s
        while self.batch and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for queued in self.window.held():
            self.window.remove(queued.job_id)
            with contextlib.suppress(Exception):
                await queued.item.msg.nak()
        await self._puller.close()

    # --- steps ----------------------------------------------------------------------------

    async def _fill(self) -> None:
        room = self.window.room
        if room == 0:
            return
        # Quick when jobs wait here already: the next batch should not wait for a pull.
        timeout = 0.05 if len(self.window) else self.fetch_timeout_s
        for msg in await self._puller.pull(room, timeout):
            await self._take(msg)

    async def _take(self, msg: Msg) -> None:
        try:
            command = GenerateImage.model_validate_json(msg.data)
        except ValidationError as exc:
            # It can never succeed: its owner hears why once, and it is not retried.
            ref = ref_from_raw(msg.data, JobKind.GENERATION)
            log.warning("invalid generation command", extra={"error": str(exc)})
            if ref is not None:
                with contextlib.suppress(Exception):
                    await self.lifecycle.fail(ref, FailureCode.INVALID_INPUT,
                                              f"Invalid command: {fields_of(exc)}.")
            await settle_quietly(msg.ack)
            return
        if command.job_id in self.window:
            await settle_quietly(msg.ack)  # another copy of a job held already
            return
        try:
            keep = await self.handlers.take(command, msg.metadata.num_delivered)
        except BROKER_ERRORS as exc:  # it comes back after the delay
            log.warning("could not take a command; retrying it",
                        extra={"job_id": command.job_id, "error": f"{type(exc).__name__}: {exc}"})
            await settle_quietly(msg.nak, delay=retry_delay_s(msg.metadata.num_delivered))
            return
        if keep:
            self.window.add(command.job_id, command.user_id, Held(msg, command))
        else:
            await settle_quietly(msg.ack)  # finished before, or not this user's job

    async def _announce_positions(self) -> None:
        for queued, position in self.window.position_changes():
            try:
                job = await self.jobs.get(queued.user_id, queued.job_id)
                if job is None or job.status.is_terminal:
                    # Cancelled while it waited here: out of the window, no stale positions.
                    self.window.remove(queued.job_id)
                    await settle_quietly(queued.item.msg.ack)
                    continue
                await self.events.publish(self._position(queued, position))
            except BROKER_ERRORS as exc:  # best effort: the next pass announces it again
                self.window.forget_announcement(queued.job_id)
                log.warning("position not announced", extra={
                    "job_id": queued.job_id, "error": f"{type(exc).__name__}: {exc}"})

    def _position(self, queued: QueueEntry[Held], position: int) -> GenerationQueuePositionChanged:
        command = queued.item.command
        return GenerationQueuePositionChanged(
            message_id=f"{command.job_id}-position-{next(self._announcements)}-{id(self):x}",
            user_id=command.user_id, job_id=command.job_id, position=position,
            correlation_id=command.correlation_id)

    async def _serve(self, batch: list[Held]) -> None:
        """Generate a batch and settle each of its commands: done or failed for good
        (acked), or queued again for another attempt (nak with a growing delay)."""
        self.batch = batch
        try:
            await self.handlers.generate([held.command for held in batch])
        except JobFailure as failure:
            for held in batch:
                try:
                    await self.lifecycle.fail(ref_of(held.command), failure.code, failure.reason)
                except Exception:
                    log.exception("could not record a failure; retrying the command")
                    await settle_quietly(held.msg.nak, delay=1.0)
                else:
                    await settle_quietly(held.msg.ack)
        except Exception:
            log.exception("generation failed; will retry")
            for held in batch:
                with contextlib.suppress(Exception):
                    await self.lifecycle.requeue(ref_of(held.command),
                                                 "An attempt failed; it will be retried shortly.")
                await settle_quietly(held.msg.nak, delay=retry_delay_s(held.msg.metadata.num_delivered))
        else:
            for held in batch:
                await settle_quietly(held.msg.ack)
        finally:
            self.batch = []
