"""notifier_service's state: its KV buckets (targets, preferences, delivery records) and
its own deliveries stream (the work it gives itself). Nothing else writes either."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from contracts.ids import checked_id
from contracts.notifications import (
    Channel,
    CheckExpoReceipts,
    Deliver,
    DeliveryRecord,
    Device,
    Preferences,
    Webhook,
    WebPushSubscription,
)
from contracts.topology import (
    DELIVERIES_KV,
    DEVICES_KV,
    NOTIFIER_DELIVERIES,
    PREFERENCES_KV,
    WEB_PUSH_KV,
    WEBHOOKS_KV,
    delivery_key,
    delivery_subject,
    notifier_work_of,
    receipts_subject,
)
from terra.nats.events import publish_with_retry
from terra.nats.listings import live_entries
from terra.records.store import OwnedRecords, update_entry, write_checked

Target = WebPushSubscription | Device | Webhook


class WebPushTargets(OwnedRecords[WebPushSubscription]):
    record_type = WebPushSubscription
    id_field = "subscription_id"


class Devices(OwnedRecords[Device]):
    record_type = Device
    id_field = "device_id"


class Webhooks(OwnedRecords[Webhook]):
    record_type = Webhook
    id_field = "webhook_id"


class AddressOwners:
    """Which account a phone's token or a browser's endpoint belongs to now, under
    `owner.<digest>` in the targets' own bucket. A phone or browser passes from one
    account to another (one signs out, the next signs in and registers it): from then on
    only the new owner's notifications may reach it."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @staticmethod
    def key(address: str) -> str:
        # A digest: the bucket's keys name no token or endpoint.
        return "owner." + hashlib.sha256(f"terra-owner:{address}".encode()).hexdigest()[:40]

    async def claim(self, address: str, user_id: str,
                    target_id: str) -> tuple[str, str] | None:
        """Make `user_id` its owner: (user, target) of the owner before, when another."""
        before, _ = await update_entry(
            self._kv, self.key(address), lambda _: {"user_id": user_id, "target_id": target_id},
            decode=json.loads, encode=lambda value: json.dumps(value).encode())
        if before is None or before["user_id"] == user_id:
            return None
        return before["user_id"], before["target_id"]

    async def release(self, address: str, user_id: str) -> None:
        """Forget its owner, when that is still `user_id` (removed, gone, erased)."""
        key = self.key(address)
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return
        if entry.value and json.loads(entry.value).get("user_id") == user_id:
            await write_checked(self._kv, key, None, entry.revision)  # lost race: theirs


class PreferencesStore:
    """One record per user, under `<user_id>`; a user who chose nothing has none."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, user_id: str) -> Preferences:
        try:
            entry = await self._kv.get(checked_id(user_id, "user id"))
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            return Preferences(user_id=user_id)
        return Preferences.model_validate_json(entry.value)

    async def put(self, preferences: Preferences) -> None:
        # Last writer wins: a user's own choices, set in one request each.
        await self._kv.put(checked_id(preferences.user_id, "user id"),
                           preferences.model_dump_json().encode())

    async def erase(self, user_id: str) -> None:
        await self._kv.delete(checked_id(user_id, "user id"))


class Deliveries:
    """Delivery records under `<user_id>.<target_id>.<delivery_id>`: created once (a
    redelivered event or Deliver finds the one record), changed revision-checked."""

    def __init__(self, kv: KeyValue, *, list_timeout_s: float | None = None) -> None:
        self._kv = kv
        self.list_timeout_s = list_timeout_s

    async def create(self, record: DeliveryRecord) -> bool:
        """False when the record exists already (nothing written)."""
        key = delivery_key(record.user_id, record.target_id, record.delivery_id)
        return await write_checked(self._kv, key, _json(record), None)

    async def get(self, user_id: str, target_id: str,
                  delivery_id: str) -> DeliveryRecord | None:
        try:
            entry = await self._kv.get(delivery_key(user_id, target_id, delivery_id))
        except KeyNotFoundError:
            return None
        return DeliveryRecord.model_validate_json(entry.value) if entry.value else None

    async def update(self, user_id: str, target_id: str, delivery_id: str,
                     change: Callable[[DeliveryRecord], DeliveryRecord | None]
                     ) -> DeliveryRecord | None:
        """Write `change(record)` over the record (None from it: leave it); what was
        written, or None when nothing was (no record, or `change` declined)."""
        _, written = await update_entry(
            self._kv, delivery_key(user_id, target_id, delivery_id), change,
            decode=DeliveryRecord.model_validate_json, encode=_json, create=False)
        return written

    async def of_target(self, user_id: str, target_id: str) -> list[DeliveryRecord]:
        """One target's deliveries, newest first."""
        keys = (f"{checked_id(user_id, 'user id')}."
                f"{checked_id(target_id, 'target id')}.*")
        entries = await asyncio.wait_for(live_entries(self._kv, keys), self.list_timeout_s)
        records = [DeliveryRecord.model_validate_json(e.value) for e in entries.values()]
        return sorted(records, key=lambda r: (r.created_at, r.delivery_id), reverse=True)

    async def erase_target(self, user_id: str, target_id: str) -> None:
        await self._erase(f"{checked_id(user_id, 'user id')}."
                          f"{checked_id(target_id, 'target id')}.*")

    async def erase(self, user_id: str) -> None:
        await self._erase(f"{checked_id(user_id, 'user id')}.>")

    async def _erase(self, keys: str) -> None:
        for key in await live_entries(self._kv, keys):
            await self._kv.delete(key)


class WorkQueue:
    """notifier_service's deliveries stream: a Deliver or receipt check per message,
    each under a message id, so a repeat within the stream's window is dropped."""

    def __init__(self, js: JetStreamContext, *, retry_for_s: float = 15.0,
                 ack_timeout_s: float = 2.0) -> None:
        self._js = js
        self.retry_for_s = retry_for_s
        self.ack_timeout_s = ack_timeout_s

    async def deliver(self, deliver: Deliver, msg_id: str) -> None:
        await self._publish(delivery_subject(deliver.user_id), deliver, msg_id)

    async def check_receipts(self, check: CheckExpoReceipts) -> None:
        await self._publish(receipts_subject(check.user_id), check, check.message_id)

    async def purge_user(self, user_id: str) -> None:
        """Every delivery and receipt check of a deleted account still waiting."""
        await self._js.purge_stream(NOTIFIER_DELIVERIES.name, subject=notifier_work_of(user_id))

    async def _publish(self, subject: str, message: Deliver | CheckExpoReceipts,
                       msg_id: str) -> None:
        await publish_with_retry(
            self._js, subject, message.model_dump_json().encode(),
            {"Nats-Msg-Id": msg_id, "Content-Type": "application/json"},
            retry_for_s=self.retry_for_s, ack_timeout_s=self.ack_timeout_s,
            stream=NOTIFIER_DELIVERIES.name)


@dataclass
class NotifierStores:
    web_push: WebPushTargets
    devices: Devices
    webhooks: Webhooks
    preferences: PreferencesStore
    deliveries: Deliveries
    web_push_owners: AddressOwners
    device_owners: AddressOwners

    @classmethod
    async def open(cls, js: JetStreamContext, *,
                   list_timeout_s: float | None = None) -> NotifierStores:
        web_push, devices = (await js.key_value(WEB_PUSH_KV.bucket),
                             await js.key_value(DEVICES_KV.bucket))
        return cls(
            web_push=WebPushTargets(web_push, list_timeout_s=list_timeout_s),
            devices=Devices(devices, list_timeout_s=list_timeout_s),
            webhooks=Webhooks(await js.key_value(WEBHOOKS_KV.bucket),
                              list_timeout_s=list_timeout_s),
            preferences=PreferencesStore(await js.key_value(PREFERENCES_KV.bucket)),
            deliveries=Deliveries(await js.key_value(DELIVERIES_KV.bucket),
                                  list_timeout_s=list_timeout_s),
            web_push_owners=AddressOwners(web_push), device_owners=AddressOwners(devices))

    def targets(self, channel: Channel) -> OwnedRecords:
        return {Channel.WEB_PUSH: self.web_push, Channel.MOBILE_PUSH: self.devices,
                Channel.WEBHOOK: self.webhooks}[channel]

    async def target(self, channel: Channel, user_id: str, target_id: str) -> Target | None:
        return await self.targets(channel).get(user_id, target_id)

    async def release(self, target: Target) -> None:
        """A browser's or phone's target removed: its address has no owner any more."""
        if isinstance(target, WebPushSubscription):
            await self.web_push_owners.release(target.endpoint, target.user_id)
        elif isinstance(target, Device):
            await self.device_owners.release(target.token, target.user_id)

    async def erase_user(self, user_id: str) -> None:
        """Everything a deleted account left here (its work in the stream aside)."""
        for target in [*await self.web_push.list(user_id), *await self.devices.list(user_id)]:
            await self.release(target)
        await self.web_push.erase(user_id)
        await self.devices.erase(user_id)
        await self.webhooks.erase(user_id)
        await self.preferences.erase(user_id)
        await self.deliveries.erase(user_id)


def _json(record: DeliveryRecord) -> bytes:
    return record.model_dump_json().encode()
