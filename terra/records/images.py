"""Generated images' records in the images KV bucket, under `<user_id>.<image_id>`."""

from __future__ import annotations

from datetime import datetime

from nats.js import JetStreamContext

from contracts.generation import ImageRecord
from contracts.topology import IMAGES_KV
from terra.records.store import OwnedRecords


class ImageStore(OwnedRecords[ImageRecord]):
    record_type = ImageRecord
    id_field = "image_id"

    @classmethod
    async def open(cls, js: JetStreamContext, *,
                   list_timeout_s: float | None = None) -> ImageStore:
        return cls(await js.key_value(IMAGES_KV.bucket), list_timeout_s=list_timeout_s)

    async def expired(self, now: datetime) -> list[ImageRecord]:
        """Every user's images past their retention (a sweep reads the whole bucket)."""
        return [record for record in await self.all() if record.expires_at <= now]
