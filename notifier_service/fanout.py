"""From an ending on the events stream to one delivery per target the user wants it on.

Each delivery's id derives from the event's message id and the target, and its record is
created revision-checked, so a redelivered event finds its records and republishes each
Deliver under the same message id (the stream drops the repeat): no target hears of one
event twice, and a crash half-way through a fan-out is finished by the redelivery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.base import utcnow
from contracts.notifications import Channel, DeliveryRecord, Notice, NotifyEvent
from contracts.topology import PREFIX
from notifier_service import domain
from notifier_service.delivery import delivery_id
from notifier_service.notices import notice_of
from notifier_service.stores import NotifierStores, WorkQueue
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.runtime.worker import PermanentFailure, settle

log = logging.getLogger(__name__)


def event_of_subject(subject: str) -> tuple[NotifyEvent, str]:
    """`terra.evt.<domain>.<name>.<user_id>` → the event and its user."""
    tokens = subject.split(".")
    if len(tokens) != 5 or tokens[:2] != [PREFIX, "evt"]:
        raise PermanentFailure(f"not an event subject: {subject[:120]}")
    try:
        return NotifyEvent(f"{tokens[2]}.{tokens[3]}"), tokens[4]
    except ValueError:
        raise PermanentFailure(f"no notification for {tokens[2]}.{tokens[3]}") from None


class FanOut:
    def __init__(self, stores: NotifierStores, queue: WorkQueue,
                 deleted_accounts: DeletedAccounts, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.stores = stores
        self.queue = queue
        self.deleted_accounts = deleted_accounts
        self.clock = clock

    async def handle(self, msg: Msg) -> None:
        """The events consumer's handler: fan out, then ack (or retry on a fault)."""
        await settle(msg, lambda: self.fan_out(msg.subject, msg.data))

    async def fan_out(self, subject: str, payload: bytes) -> list[str]:
        """The delivery ids the event made (or had made already)."""
        event, user_id = event_of_subject(subject)
        try:
            notice = notice_of(event, payload)
        except ValidationError as exc:
            raise PermanentFailure(f"undecodable {event.value} event: {exc}") from exc
        if notice.user_id != user_id:
            raise PermanentFailure("an event whose subject names another user")
        if await self.deleted_accounts.is_deleted(user_id):
            return []  # a deleted account is notified of nothing
        ids = []
        for channel, target_id in await self.targets(event, user_id):
            ids.append(await self.enqueue(notice, channel, target_id))
        if ids:
            log.info("event fanned out", extra={"event": event.value, "deliveries": len(ids),
                                                "event_id": notice.event_id})
        return ids

    async def targets(self, event: NotifyEvent,
                      user_id: str) -> list[tuple[Channel, str]]:
        """The enabled targets (their ids) of every channel the user's preferences give
        `event`."""
        channels = (await self.stores.preferences.get(user_id)).channels(event)
        found: list[tuple[Channel, str]] = []
        for channel in channels:
            store = self.stores.targets(channel)
            for target in await store.list(user_id):
                if not domain.is_enabled(target):
                    continue
                if channel is Channel.WEBHOOK and not domain.wants(target, event.value):
                    continue
                found.append((channel, getattr(target, store.id_field)))
        return found

    async def enqueue(self, notice: Notice, channel: Channel, target_id: str) -> str:
        record = DeliveryRecord(delivery_id=delivery_id(notice.event_id, target_id),
                                user_id=notice.user_id, target_id=target_id,
                                channel=channel, notice=notice, created_at=self.clock())
        if not await self.stores.deliveries.create(record):
            # A redelivered event. Publish again unless an attempt shows it was published
            # (a crash may have come between the two); the stream drops a repeat by its id.
            stored = await self.stores.deliveries.get(record.user_id, target_id,
                                                      record.delivery_id)
            if stored is None or stored.attempts:
                return record.delivery_id
        await self.queue.deliver(domain.deliver_of(record), record.delivery_id)
        return record.delivery_id

