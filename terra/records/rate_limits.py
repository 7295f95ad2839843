"""Sliding-window rate limits counted in NATS KV, so every replica of a service agrees.

Each key holds the times of its recent admissions (a sliding-window log, a JSON list). An
admission is one revision-checked write (`terra.records.store.update_entry`) that appends
its time only while the window has room, so N concurrent callers are N increments and at
most `limit` of them get through. A full window is not written, so a key under attack is
only read.

Why a log rather than a fixed-window counter: Retry-After is exact (when the oldest
admission leaves the window), there is no double burst at window edges, and a log never
outgrows its limit. The bucket's TTL must be at least the window: it is what forgets keys.

No service rules here: which keys, which limits and what a refusal means are the caller's.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from terra.errors import TerraError
from terra.records.store import KeptChanging, update_entry

_MAX_REMEMBERED = 10_000  # full keys remembered in-process; expired ones go first



class RateLimitExceeded(TerraError):
    """The key's window is full; another admission fits in `retry_after_s` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit reached; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Window:
    """At most `limit` attempts in any `window_s` seconds."""

    limit: int
    window_s: float

    def recent(self, times: Sequence[float], now: float) -> list[float]:
        # Times a little ahead of `now` (another replica's clock) still count.
        return sorted(t for t in times if t > now - self.window_s)

    def retry_after(self, times: Sequence[float], now: float) -> int | None:
        """Whole seconds until an attempt fits, or None when one fits now."""
        recent = self.recent(times, now)
        if len(recent) < self.limit:
            return None
        frees_at = recent[len(recent) - self.limit] + self.window_s
        # Clamped: an attempt stamped a moment after `now` (a concurrent one, or another
        # replica's clock) must not make the wait longer than the window.
        return max(1, min(math.ceil(frees_at - now), math.ceil(self.window_s)))

    def admit(self, times: Sequence[float], now: float) -> list[float] | None:
        """The log with an attempt at `now` added, or None when the window is full."""
        recent = self.recent(times, now)
        if len(recent) >= self.limit:
            return None
        return [*recent, now]


class AttemptLogs:
    """Sliding-window logs (JSON lists of times) in one KV bucket, changed only by
    revision-checked writes."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def change(
        self, key: str, change: Callable[[list[float]], list[float] | None]
    ) -> tuple[list[float], bool]:
        """Write `change(times)` over the key's log, reading again after a lost race.

        Returns the log the change saw and whether it was written (a None change writes
        nothing); raises `KeptChanging` when the key keeps changing under us.
        """
        seen, written = await update_entry(
            self._kv, key, lambda times: change(times or []),
            decode=lambda value: [float(t) for t in json.loads(value)],
            encode=lambda times: json.dumps(times).encode())
        return seen or [], written is not None


class SlidingWindowLimit:
    """`window.limit` admissions per key in any `window.window_s`, shared by every process
    that uses the same bucket.

    Within one process, admissions of one key take turns (a lock per key), so a burst
    costs a read and a write each instead of a storm of lost races; and a key found full
    is refused without asking KV again until its wait is over (other processes can only
    fill it further)."""

    def __init__(self, kv: KeyValue, window: Window, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._logs = AttemptLogs(kv)
        self.window = window
        self._clock = clock
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # and how many use it
        self._full_until: dict[str, float] = {}

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, window: Window,
                   **options) -> SlidingWindowLimit:
        return cls(await js.key_value(bucket), window, **options)

    async def admit(self, key: str) -> None:
        """Count one admission for `key`, or raise `RateLimitExceeded` (nothing counted)."""
        self._refuse_if_known_full(key)
        lock, waiting = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, waiting + 1)
        try:
            async with lock:
                self._refuse_if_known_full(key)
                now = self._clock()
                try:
                    seen, written = await self._logs.change(
                        key, lambda times: self.window.admit(times, now))
                except KeptChanging:  # other processes hammer the key: it is full enough
                    raise RateLimitExceeded(1) from None
                if not written:
                    wait = self.window.retry_after(seen, now) or 1
                    self._remember_full(key, now + wait)
                    raise RateLimitExceeded(wait)
        finally:
            lock, waiting = self._locks[key]
            if waiting == 1:
                del self._locks[key]  # the dict keeps only keys in use
            else:
                self._locks[key] = (lock, waiting - 1)

    def _remember_full(self, key: str, until: float) -> None:
        if len(self._full_until) >= _MAX_REMEMBERED:
            now = self._clock()
            self._full_until = {k: t for k, t in self._full_until.items() if t > now}
        self._full_until[key] = until

    def _refuse_if_known_full(self, key: str) -> None:
        until = self._full_until.get(key)
        if until is None:
            return
        now = self._clock()
        if now < until:
            raise RateLimitExceeded(max(1, math.ceil(until - now)))
        del self._full_until[key]
