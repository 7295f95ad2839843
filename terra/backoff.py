"""Retrying: the one backoff formula (`retry_delay_s`), the one restart policy for what
keeps failing (`RestartPolicy`), and one loop for a call that a broker fault (a leader
election, a reconnect) only delays (`retry_while`).

The delay before retry n is exponential from a base, capped, with equal jitter: of the
step s = min(cap, base * 2**(n - 1)), one half is always waited and the other drawn at
random, so the delay lies in [s/2, s]. Equal rather than full jitter (anywhere in [0, s]):
callers that failed together still spread over half a step, yet none retries at once, so
a failing command, a crashing loop or a leaderless stream is never hammered, and a step's
ceiling is the delay it had before jitter.

`draw` is the random source: a function returning a float in [0, 1] (`random.random`).
Tests pass a constant: 1.0 gives the ceiling of every step, 0.0 its floor.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Draw = Callable[[], float]

# 2**64 times any base is past any cap; bounding the power keeps `base * 2**n` from
# overflowing a float when the faults in a row keep counting through a long outage.
_MAX_DOUBLINGS = 64


def retry_delay_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0, *,
                  draw: Draw = random.random) -> float:
    """The wait before retry number `attempt` (from 1): between half and all of the step
    min(cap_s, base_s * 2**(attempt - 1)). Handlers nak with the defaults: 1 s up to 60 s."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    step = min(cap_s, base_s * 2 ** min(attempt - 1, _MAX_DOUBLINGS))
    return step / 2 * (1 + draw())


@dataclass(frozen=True)
class RestartPolicy:
    """When something that keeps failing (a process's loop, a child of `terra up`) is
    started again, and when to give up on it. Pure: failure times in, a delay or None out.

    The give-up rule: at a failure, let n be the failures at most `window_s` seconds old,
    this one included (one exactly `window_s` old counts); restarting now would be restart
    n within the window, and the policy gives up when n > `max_restarts`. So at most
    `max_restarts` restarts happen within any window; 0 gives up at the first failure.
    Restart n waits `retry_delay_s(n, base_delay_s, max_delay_s)`, so a thing that stayed
    up for a whole window starts again from the shortest delay.
    """

    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    max_restarts: int = 5
    window_s: float = 60.0
    draw: Draw = field(default=random.random, repr=False, compare=False)

    def recent_failures(self, failure_times: Iterable[float], now: float) -> int:
        return sum(1 for at in failure_times if now - at <= self.window_s)

    def delay_s(self, failure_times: Iterable[float], now: float) -> float | None:
        """The wait before restarting after the latest failure (the last of
        `failure_times`, at `now`), or None: give up."""
        recent = self.recent_failures(failure_times, now)
        if recent > self.max_restarts:
            return None
        return retry_delay_s(recent, self.base_delay_s, self.max_delay_s, draw=self.draw)


async def retry_while(call: Callable[[], Awaitable[T]],
                      retryable: Callable[[BaseException], bool], *,
                      wait_s: float | None, first_pause_s: float, max_pause_s: float,
                      what: str, extra: dict | None = None,
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                      draw: Draw = random.random) -> T:
    """`call()` again after growing pauses (`retry_delay_s` from `first_pause_s` up to
    `max_pause_s`) while it raises what `retryable` accepts, for up to `wait_s` (None:
    until it answers); then the last error is raised."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            pause = retry_delay_s(attempt, first_pause_s, max_pause_s, draw=draw)
            if not retryable(exc) or (deadline is not None
                                      and time.monotonic() + pause > deadline):
                raise
            log.warning(f"{what}; retrying", extra={
                **(extra or {}), "attempt": attempt, "error": f"{type(exc).__name__}: {exc}"})
        await sleep(pause)
