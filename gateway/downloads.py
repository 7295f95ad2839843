"""Downloads of the caller's objects: only keys under their own folders are streamed or
presigned (`contracts.storage_access.downloadable`), whatever a record says."""

from __future__ import annotations

import logging
from datetime import timedelta

from contracts.storage_access import downloadable
from terra.records.objects import ObjectStorage

log = logging.getLogger(__name__)


def refused(user_id: str, key: str) -> bool:
    """True (and logged) when `key` is not one `user_id` may download: the record naming
    it is damaged or was written by a bug, and the object is someone else's."""
    if downloadable(user_id, key):
        return False
    log.error("download refused: the record names a key outside the caller's folders",
              extra={"user_id": user_id, "key": key})
    return True


async def download_url(storage: ObjectStorage, user_id: str, key: str,
                       expires: timedelta | None = None) -> str | None:
    """A presigned GET of `key` for `user_id`, valid `expires` (the storage's default, 15
    minutes, when None); None when refused."""
    if refused(user_id, key):
        return None
    return await (storage.presigned_get(key) if expires is None
                  else storage.presigned_get(key, expires))
