"""Per-user caps on queued-and-running jobs: one KV key per user (`<kind>.<user_id>`)
holding their live job ids, a `terra.records.slots.Slots` key, so concurrent requests
cannot exceed the cap."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts.ids import checked_id
from contracts.topology import QUEUE_SLOTS_KV
from terra.records.slots import Slots


class QueueSlots(Slots):
    def __init__(self, kv: KeyValue, kind: str) -> None:
        super().__init__(kv, lambda user_id: f"{kind}.{checked_id(user_id, 'user id')}")

    @classmethod
    async def open(cls, js: JetStreamContext, kind: str) -> QueueSlots:
        return cls(await js.key_value(QUEUE_SLOTS_KV.bucket), kind)
