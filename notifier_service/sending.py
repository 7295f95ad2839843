"""Sending one delivery (the `NOTIFIER_SENDS` consumer) and reading Expo's receipts (the
`NOTIFIER_RECEIPTS` consumer).

The delivery record decides: only a pending one is sent, and each attempt is written to
it revision-checked. A retry is a nak with the next wait of the schedule, so the server
keeps the schedule across restarts (never a sleep here); a busy target's delivery waits
`notify_busy_wait_s` without counting an attempt. A target that says it is gone is
removed; one whose schedule ran out is disabled and says why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.aio.msg import Msg

from contracts.base import utcnow
from contracts.notifications import (
    Channel,
    CheckExpoReceipts,
    Deliver,
    DeliveryRecord,
    DeliveryState,
    Device,
    PushProvider,
)
from notifier_service import domain
from notifier_service.delivery import Outcome, OutcomeKind, Sender, next_wait_s
from notifier_service.stores import NotifierStores, Target, WorkQueue
from terra.runtime.worker import AgainLater, decode, settle

log = logging.getLogger(__name__)

# Senders by channel, and by provider for phones (a device goes through Expo or FCM).
Senders = Mapping[Channel | PushProvider, Sender]
# Expo's receipts for these tickets: ticket id -> None (delivered) or Expo's error code,
# for those it has (`channels.expo.ExpoSender.read_receipts`).
ReadReceipts = Callable[[list[str]], Awaitable[Mapping[str, str | None]]]
DEVICE_NOT_REGISTERED = "DeviceNotRegistered"
# The longest wait for a busy target: a long queue behind a slow one comes back about
# this often (the consumer never gives up a delivery: its record counts the attempts).
BUSY_WAIT_CAP_S = 30.0
# How long a delivery waits in hand for its target's slot before that target counts as
# busy: long enough for a fast target to answer one of its sends, short enough that the
# deliveries of a slow one soon make room for the others'.
SLOT_WAIT_S = 0.5
# A target with a send in flight this long is answering slowly: its next deliveries wait
# on the stream (a nak), not in hand.
SLOW_SEND_S = 0.25


@dataclass(frozen=True)
class SendPolicy:
    schedule_s: tuple[float, ...]
    max_retry_after_s: float = 86_400.0
    timeout_s: float = 10.0
    busy_wait_s: float = 1.0
    per_target: int = 4
    per_user: int | None = None  # None: as per_target
    expo_receipt_delay_s: float = 900.0


class TargetSlots:
    """At most `limit` sends in flight to one target, and at most `user_limit` to the
    targets of one user: a slow target holds its own slots, and a user whose targets are
    all slow holds the user's share, never the others' (the consumer's concurrency
    bounds the whole).

    A delivery whose target (or user) is at its limit waits here a moment (`wait_s`) when
    its sends are answered fast (none in flight for more than `SLOW_SEND_S`): a slot
    comes free within milliseconds, and a burst must not go to the back of the queue.
    Sends that are slow make it busy at once (the caller naks): its deliveries never sit
    in hand, where they would hold the consumer's room."""

    def __init__(self, limit: int, user_limit: int | None = None) -> None:
        self.limit = limit
        self.user_limit = user_limit or limit
        self._started: dict[str, list[float]] = {}  # per key, its sends' start times
        self._freed = asyncio.Condition()

    def _full(self, keys: tuple[str, str]) -> bool:
        return any(len(self._started.get(key, ())) >= limit
                   for key, limit in zip(keys, (self.limit, self.user_limit), strict=True))

    def _slow(self, keys: tuple[str, str]) -> bool:
        now = time.monotonic()
        return any(now - min(self._started[key]) > SLOW_SEND_S
                   for key in keys if self._started.get(key))

    @staticmethod
    def _keys(target_id: str, user_id: str) -> tuple[str, str]:
        return f"target:{target_id}", f"user:{user_id}"

    async def take(self, target_id: str, user_id: str = "", wait_s: float = 0.0) -> bool:
        keys = self._keys(target_id, user_id)
        async with self._freed:
            if self._full(keys):
                if wait_s <= 0 or self._slow(keys):
                    return False
                try:
                    await asyncio.wait_for(
                        self._freed.wait_for(lambda: not self._full(keys)), wait_s)
                except TimeoutError:
                    return False
            for key in keys:
                self._started.setdefault(key, []).append(time.monotonic())
            return True

    async def release(self, target_id: str, user_id: str = "") -> None:
        async with self._freed:
            for key in self._keys(target_id, user_id):
                started = self._started[key]
                started.remove(min(started))
                if not started:
                    del self._started[key]
            self._freed.notify_all()

    def held(self, target_id: str) -> int:
        return len(self._started.get(self._keys(target_id, "")[0], ()))


class Sending:
    def __init__(self, stores: NotifierStores, queue: WorkQueue, senders: Senders,
                 policy: SendPolicy, *, clock: Callable[[], datetime] = utcnow,
                 draw: Callable[[], float] = random.random) -> None:
        self.stores = stores
        self.queue = queue
        self.senders = senders
        self.policy = policy
        self.slots = TargetSlots(policy.per_target, policy.per_user)
        self.clock = clock
        self.draw = draw

    async def handle(self, msg: Msg) -> None:
        """The sends consumer's handler: ack when done, nak with the wait when not."""
        await settle(msg, lambda: self.deliver(decode(Deliver, msg.data),
                                               msg.metadata.num_delivered))

    async def deliver(self, order: Deliver, delivered: int = 1) -> Outcome | None:
        """One attempt of one delivery (`delivered`: the message's delivery count);
        `AgainLater` when it must be tried again later. The attempt's outcome, or None
        when nothing was sent."""
        # The slot first: a busy target's delivery goes back to wait without a read.
        if not await self.slots.take(order.target_id, order.user_id, SLOT_WAIT_S):
            raise AgainLater(self.busy_wait_s(delivered))
        try:
            deliveries = self.stores.deliveries
            record = await deliveries.get(order.user_id, order.target_id, order.delivery_id)
            if record is None or record.state is not DeliveryState.PENDING:
                return None  # done already (or erased): this message is a leftover
            early_s = ((record.next_attempt_at - self.clock()).total_seconds()
                       if record.next_attempt_at is not None else 0.0)
            if early_s > 0:
                # Back before its time (its nak was lost, or the process died after writing
                # the attempt): the schedule, not the redelivery, says when.
                raise AgainLater(early_s)
            target = await self.stores.target(record.channel, record.user_id,
                                              record.target_id)
            if target is None or not domain.is_enabled(target):
                await deliveries.update(record.user_id, record.target_id, record.delivery_id,
                                        lambda r: domain.dropped(r)
                                        if r.state is DeliveryState.PENDING else None)
                return None
            outcome = await self.send(target, record)
        finally:
            await self.slots.release(order.target_id, order.user_id)
        await self.settle_attempt(record, target, outcome)
        return outcome

    def busy_wait_s(self, delivered: int) -> float:
        """The wait of a delivery whose target is busy: longer each time it found it so
        (up to `BUSY_WAIT_CAP_S`), so a long queue behind a slow target does not churn
        the consumer; jittered, so the waiting ones come back spread out."""
        wait = min(self.policy.busy_wait_s * max(delivered, 1), BUSY_WAIT_CAP_S)
        return wait * (0.75 + 0.5 * self.draw())

    async def send(self, target: Target, record: DeliveryRecord) -> Outcome:
        """The sender's outcome; a sender that hangs or breaks is a failed attempt."""
        sender = self.senders.get(target.provider if isinstance(target, Device)
                                  else record.channel)
        if sender is None:
            return Outcome(OutcomeKind.REFUSED, error="this channel is not configured")
        started = time.monotonic()
        try:
            # The sender has its own timeout; this one only bounds a sender that hangs.
            return await asyncio.wait_for(sender.send(target, record.notice,
                                                      record.delivery_id),
                                          self.policy.timeout_s + 2)
        except TimeoutError:
            error = "timed out"
        except Exception as exc:  # a sender's bug must not stop the consumer
            log.exception("sender failed", extra={"channel": record.channel.value})
            error = f"{type(exc).__name__}: {exc}"
        return Outcome(OutcomeKind.RETRY, error=error[:500],
                       duration_ms=int((time.monotonic() - started) * 1000))

    async def settle_attempt(self, record: DeliveryRecord, target: Target,
                             outcome: Outcome) -> None:
        """Write the attempt, then act on it: remove, disable, read receipts later, or
        raise `AgainLater` with the wait before the next attempt."""
        now = self.clock()
        waits: list[float | None] = []

        def change(current: DeliveryRecord) -> DeliveryRecord | None:
            if current.state is not DeliveryState.PENDING:
                return None  # settled meanwhile (a redelivered copy got there first)
            wait = None
            if outcome.kind is OutcomeKind.RETRY:
                wait = next_wait_s(current.round_attempts + 1, self.policy.schedule_s,
                                   retry_after_s=outcome.retry_after_s,
                                   max_retry_after_s=self.policy.max_retry_after_s,
                                   draw=self.draw)
            waits[:] = [wait]
            return domain.after_attempt(current, outcome, now, wait)

        written = await self.stores.deliveries.update(
            record.user_id, record.target_id, record.delivery_id, change)
        if written is None:
            return
        store = self.stores.targets(record.channel)
        facts = {"delivery_id": record.delivery_id, "channel": record.channel.value,
                 "outcome": outcome.kind.value, "status_code": outcome.status_code}
        if outcome.kind is OutcomeKind.DELIVERED:
            if outcome.expo_tickets:
                await self.queue.check_receipts(CheckExpoReceipts(
                    message_id=f"{record.delivery_id}-receipts{len(written.attempts)}",
                    user_id=record.user_id,
                    device_id=record.target_id, ticket_ids=list(outcome.expo_tickets),
                    due_at=now + timedelta(seconds=self.policy.expo_receipt_delay_s)))
        elif outcome.kind is OutcomeKind.GONE:
            log.info("target gone; removed", extra=facts)
            await store.delete(record.user_id, record.target_id)
            await self.stores.release(target)
        elif outcome.kind is OutcomeKind.REFUSED:
            log.warning("delivery refused by its target", extra=facts)
        elif waits and waits[0] is not None:
            raise AgainLater(waits[0])
        else:
            reason = domain.exhausted_reason(written.round_attempts, outcome)
            log.warning("delivery failed; target disabled", extra={**facts, "reason": reason})
            with contextlib.suppress(KeyError):  # removed meanwhile: nothing to disable
                await store.update(record.user_id, record.target_id,
                                   lambda t: domain.disabled(t, reason, now)
                                   if domain.is_enabled(t) else None)


class Receipts:
    """Expo answers a send with tickets, and later with receipts: a device it no longer
    knows (`DeviceNotRegistered`) is removed."""

    def __init__(self, stores: NotifierStores, read_receipts: ReadReceipts, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.stores = stores
        self.read_receipts = read_receipts
        self.clock = clock

    async def handle(self, msg: Msg) -> None:
        await settle(msg, lambda: self.check(decode(CheckExpoReceipts, msg.data)))

    async def check(self, check: CheckExpoReceipts) -> bool:
        """Whether the device was removed; `AgainLater` until the receipts are due."""
        early = (check.due_at - self.clock()).total_seconds()
        if early > 0:
            raise AgainLater(early)
        receipts = await self.read_receipts(check.ticket_ids)
        if DEVICE_NOT_REGISTERED not in receipts.values():
            return False
        log.info("device no longer registered; removed", extra={"device_id": check.device_id})
        device = await self.stores.devices.get(check.user_id, check.device_id)
        await self.stores.devices.delete(check.user_id, check.device_id)
        if device is not None:
            await self.stores.release(device)
        return True
