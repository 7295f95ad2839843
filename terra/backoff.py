"""Retrying: delays between attempts of a failed message, and one loop for a call that a
broker fault (a leader election, a reconnect) only delays."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_delay_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential: 1, 2, 4, ... seconds, capped. Handlers nak with this delay."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    return min(cap_s, base_s * 2 ** (attempt - 1))


async def retry_while(call: Callable[[], Awaitable[T]],
                      retryable: Callable[[BaseException], bool], *,
                      wait_s: float | None, first_pause_s: float, max_pause_s: float,
                      what: str, extra: dict | None = None,
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """`call()` again after doubling pauses while it raises what `retryable` accepts, for up
    to `wait_s` (None: until it answers); then the last error is raised."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    pause, attempt = first_pause_s, 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc) or (deadline is not None
                                      and time.monotonic() + pause > deadline):
                raise
            log.warning(f"{what}; retrying", extra={
                **(extra or {}), "attempt": attempt, "error": f"{type(exc).__name__}: {exc}"})
        await sleep(pause)
        pause = min(max_pause_s, pause * 2)
