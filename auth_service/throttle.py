"""Login throttling: recent failures per email and per client address in LOGIN_THROTTLE_KV.

Each key holds the failure times inside the window; updates are revision-checked, so
replicas counting the same email at once lose no failure. The bucket's TTL forgets
keys once nobody has failed for a while.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from auth_service.domain import RateLimited, email_digest, retry_after, with_failure
from contracts.topology import LOGIN_THROTTLE_KV

_MAX_CAS_ATTEMPTS = 50


def address_digest(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


class LoginThrottle:
    def __init__(
        self,
        kv: KeyValue,
        *,
        window_s: float,
        max_per_email: int,
        max_per_address: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._window_s = window_s
        self._max_per_email = max_per_email
        self._max_per_address = max_per_address
        self._clock = clock

    @classmethod
    async def open(cls, js: JetStreamContext, **limits) -> LoginThrottle:
        return cls(await js.key_value(LOGIN_THROTTLE_KV.bucket), **limits)

    def _keys(self, email: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(f"email.{email_digest(email)}", self._max_per_email)]
        if address:
            keys.append((f"addr.{address_digest(address)}", self._max_per_address))
        return keys

    async def check(self, email: str, address: str | None) -> None:
        """Raise `RateLimited` when the email or the address is over its limit."""
        now = self._clock()
        waits = []
        for key, limit in self._keys(email, address):
            failures, _ = await self._read(key)
            if (wait := retry_after(failures, now, self._window_s, limit)) is not None:
                waits.append(wait)
        if waits:
            raise RateLimited(max(waits))

    async def record_failure(self, email: str, address: str | None) -> None:
        for key, limit in self._keys(email, address):
            await self._add_failure(key, limit)

    async def clear(self, email: str) -> None:
        """A successful login forgives the email's failures (not the address's)."""
        await self._kv.delete(f"email.{email_digest(email)}")

    async def _read(self, key: str) -> tuple[list[float], int | None]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return [], None
        if entry.value is None:
            return [], entry.revision
        return list(json.loads(entry.value)), entry.revision

    async def _add_failure(self, key: str, limit: int) -> None:
        for attempt in range(_MAX_CAS_ATTEMPTS):
            failures, revision = await self._read(key)
            updated = json.dumps(with_failure(failures, self._clock(), self._window_s, limit))
            try:
                if revision is None:
                    await self._kv.create(key, updated.encode())
                else:
                    await self._kv.update(key, updated.encode(), last=revision)
                return
            except KeyWrongLastSequenceError:
                # Another replica counted a failure meanwhile: count on top of it, after a
                # short random pause so that contenders spread out.
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise RuntimeError(f"login throttle key {key} kept changing")
