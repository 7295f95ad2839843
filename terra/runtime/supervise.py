"""Supervision of a process's long-lived loops.

Every loop that must run for the life of a process (a worker's pull loop, a sweep, the
gateway's event fan-out, heartbeats) is started here. A loop that raises is logged with
its stack and restarted after a growing delay; a loop that keeps failing makes the
supervisor give up (both as `terra.backoff.RestartPolicy` says), which ends the process
with a non-zero code so that whatever runs it (`terra up`, an orchestrator) can restart
it. Nothing stops silently.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from terra.backoff import RestartPolicy

log = logging.getLogger(__name__)

# A loop in a process: give up at the 5th failure within a minute (the process then exits
# and is restarted whole), waiting up to 15 s between tries.
LOOP_RESTARTS = RestartPolicy(max_restarts=4, max_delay_s=15.0)

# The exit code of a process whose supervisor gave up (EX_SOFTWARE).
EXIT_SUPERVISION_FAILED = 70


def exit_process(reason: str) -> None:
    """The default when a supervisor gives up: stop this process the way an operator
    would (SIGTERM: in-flight work is handed back), then exit non-zero (`run_app`)."""
    global exit_code
    exit_code = EXIT_SUPERVISION_FAILED
    log.critical("supervision gave up; stopping the process", extra={"reason": reason})
    os.kill(os.getpid(), signal.SIGTERM)


exit_code = 0  # what the process should exit with once it has stopped


@dataclass
class LoopState:
    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    failures: deque[float] = field(default_factory=deque)


class Supervisor:
    def __init__(
        self,
        policy: RestartPolicy | None = None,
        *,
        on_give_up: Callable[[str], None] = exit_process,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or LOOP_RESTARTS
        self._on_give_up = on_give_up
        self._clock = clock
        self._tasks: dict[str, asyncio.Task] = {}
        self.loops: dict[str, LoopState] = {}
        self.gave_up: str | None = None
        self._stopping = False

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop()` until the supervisor stops; a return is as unexpected as a raise."""
        if name in self._tasks:
            raise ValueError(f"a loop named {name!r} is already supervised")
        # Only the last max_restarts + 1 failure times can decide anything.
        failures = deque(maxlen=self.policy.max_restarts + 1)
        state = self.loops[name] = LoopState(name, failures=failures)
        self._tasks[name] = asyncio.create_task(self._keep(state, loop), name=name)

    @property
    def healthy(self) -> bool:
        """Every loop is running (none is waiting to restart) and nobody gave up."""
        return self.gave_up is None and all(s.running for s in self.loops.values())

    def begin_stop(self) -> None:
        """From now on a loop that returns is done, not restarted (a clean shutdown)."""
        self._stopping = True

    async def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        self._tasks.clear()

    async def _keep(self, state: LoopState, loop: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            state.running = True
            try:
                await loop()
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as exc:  # supervision exists for the unexpected
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("loop failed", extra={"loop": state.name})
            else:
                if self._stopping:
                    break
                state.last_error = "returned"
                log.error("loop returned unexpectedly", extra={"loop": state.name})
            if self._stopping:  # failing while the process stops cleanly is no reason to quit
                break
            state.running = False
            now = self._clock()
            state.failures.append(now)
            delay = self.policy.delay_s(state.failures, now)
            if delay is None:
                failures = self.policy.recent_failures(state.failures, now)
                self.gave_up = (f"loop {state.name} failed {failures} times in "
                                f"{self.policy.window_s:.0f} s; last: {state.last_error}")
                self._on_give_up(self.gave_up)
                return
            state.restarts += 1
            log.warning("restarting loop", extra={"loop": state.name, "delay_s": delay,
                                                  "restarts": state.restarts})
            await asyncio.sleep(delay)
        state.running = False
