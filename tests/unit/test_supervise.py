"""terra.runtime.supervise: a failed or returning loop is logged and restarted with backoff; a loop
that keeps failing makes the supervisor give up; stopping ends loops without restarts."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import pytest

from terra.backoff import RestartPolicy
from terra.runtime.supervise import Supervisor
from tests.fakes import wait_until


def ceiling() -> float:
    """The random source at its top: every restart waits its step's full delay."""
    return 1.0


TINY = RestartPolicy(base_delay_s=0.001, max_delay_s=0.004, max_restarts=100, window_s=60.0,
                     draw=ceiling)


class FakeClock:
    """Monotonic time that moves only by `step` per reading."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class ScriptedLoop:
    """Fails in the given ways, one per run ("raise" or "return"), then blocks until
    cancelled, or returns once `release` is set."""

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = deque(outcomes)
        self.runs = 0
        self.cancelled = False
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.outcomes:
            outcome = self.outcomes.popleft()
            if outcome == "raise":
                fail_deep_inside()
            return
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def fail_deep_inside() -> None:
    raise RuntimeError("boom")


class GiveUps:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


# --- RestartPolicy ---------------------------------------------------------------------------


def test_the_restart_delay_doubles_with_each_recent_failure_up_to_its_cap():
    policy = RestartPolicy(base_delay_s=0.5, max_delay_s=3.0, max_restarts=10, draw=ceiling)
    failures = [1.0, 2.0, 3.0, 4.0, 5.0]
    delays = [policy.delay_s(failures[:n], now=failures[n - 1]) for n in (1, 2, 3, 4, 5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_restart_delay_is_jittered_between_half_and_all_of_its_step():
    policy = RestartPolicy(base_delay_s=0.5, max_delay_s=3.0, max_restarts=10)
    delays = {policy.delay_s([1.0, 2.0, 3.0], now=3.0) for _ in range(200)}
    assert all(1.0 <= delay <= 2.0 for delay in delays) and len(delays) > 1


def test_the_policy_gives_up_when_failures_within_the_window_exceed_max_restarts():
    policy = RestartPolicy(max_restarts=3, window_s=10.0)
    assert policy.delay_s(deque([1.0, 2.0, 3.0]), now=3.0) is not None  # restart 3
    assert policy.delay_s(deque([1.0, 2.0, 3.0, 3.5]), now=3.5) is None  # restart 4: no


def test_failures_older_than_the_window_are_forgotten():
    policy = RestartPolicy(max_restarts=2, window_s=10.0, draw=ceiling)
    failures = deque([0.0, 5.0, 10.0, 15.0])
    assert policy.recent_failures(failures, now=19.5) == 2  # 0 and 5 are more than 10 s old
    assert policy.delay_s(failures, now=19.5) == 1.0  # restart 2 of the window


def test_a_failure_exactly_window_s_old_still_counts():
    policy = RestartPolicy(max_restarts=2, window_s=10.0)
    assert policy.recent_failures([0.0, 5.0, 10.0], now=10.0) == 3
    assert policy.delay_s([0.0, 5.0, 10.0], now=10.0) is None


# --- Supervisor ---------------------------------------------------------------------------------


async def test_a_loop_that_raises_is_logged_with_its_stack_and_restarted(caplog):
    supervisor = Supervisor(TINY, on_give_up=GiveUps(), clock=FakeClock())
    loop = ScriptedLoop("raise")
    supervisor.start("pull:test", loop)
    await wait_until(lambda: loop.runs == 2 and supervisor.loops["pull:test"].running)

    state = supervisor.loops["pull:test"]
    assert state.restarts == 1 and state.last_error == "RuntimeError: boom"
    failed = [r for r in caplog.records if r.getMessage() == "loop failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert failed[0].loop == "pull:test"
    assert failed[0].exc_info[0] is RuntimeError
    assert "fail_deep_inside" in caplog.text  # the stack, not only the message
    assert supervisor.healthy
    await supervisor.stop()


async def test_a_loop_that_returns_is_as_unexpected_as_one_that_raises(caplog):
    supervisor = Supervisor(TINY, on_give_up=GiveUps(), clock=FakeClock())
    loop = ScriptedLoop("return")
    supervisor.start("sweep", loop)
    await wait_until(lambda: loop.runs == 2)

    state = supervisor.loops["sweep"]
    assert state.restarts == 1 and state.last_error == "returned"
    returned = [r for r in caplog.records if r.getMessage() == "loop returned unexpectedly"]
    assert len(returned) == 1 and returned[0].levelno == logging.ERROR
    await supervisor.stop()


async def test_restarts_wait_the_policy_delay_growing_with_recent_failures(caplog):
    caplog.set_level(logging.WARNING, logger="terra.runtime.supervise")
    supervisor = Supervisor(TINY, on_give_up=GiveUps(), clock=FakeClock())
    loop = ScriptedLoop("raise", "return", "raise", "raise", "raise")
    supervisor.start("pull:test", loop)
    await wait_until(lambda: loop.runs == 6)

    delays = [r.delay_s for r in caplog.records if r.getMessage() == "restarting loop"]
    assert delays == [0.001, 0.002, 0.004, 0.004, 0.004]
    assert supervisor.loops["pull:test"].restarts == 5
    await supervisor.stop()


async def test_the_supervisor_is_unhealthy_while_a_loop_waits_to_restart():
    slow = RestartPolicy(base_delay_s=60.0, max_delay_s=60.0, max_restarts=100)
    supervisor = Supervisor(slow, on_give_up=GiveUps(), clock=FakeClock())
    steady, failing = ScriptedLoop(), ScriptedLoop("raise")
    supervisor.start("steady", steady)
    supervisor.start("failing", failing)
    await wait_until(lambda: supervisor.loops["failing"].restarts == 1)

    assert not supervisor.loops["failing"].running and supervisor.loops["steady"].running
    assert not supervisor.healthy
    assert failing.runs == 1  # still waiting out its delay
    await supervisor.stop()
    assert steady.cancelled


async def test_it_gives_up_after_max_restarts_within_the_window_naming_the_loop():
    give_ups = GiveUps()
    policy = RestartPolicy(base_delay_s=0.001, max_delay_s=0.001, max_restarts=2,
                           window_s=10.0)
    supervisor = Supervisor(policy, on_give_up=give_ups, clock=FakeClock(step=1.0))
    loop = ScriptedLoop("raise", "raise", "raise", "raise", "raise")
    supervisor.start("pull:generation", loop)
    await wait_until(lambda: give_ups.reasons)
    for _ in range(10):  # a supervisor that gave up restarts nothing more
        await asyncio.sleep(0.002)

    assert loop.runs == 3
    assert len(give_ups.reasons) == 1
    reason = give_ups.reasons[0]
    assert "pull:generation" in reason and "3 times" in reason and "RuntimeError: boom" in reason
    assert supervisor.gave_up == reason and not supervisor.healthy
    await supervisor.stop()


async def test_failures_spread_beyond_the_window_never_give_up():
    give_ups = GiveUps()
    policy = RestartPolicy(base_delay_s=0.001, max_delay_s=0.001, max_restarts=2,
                           window_s=10.0)
    supervisor = Supervisor(policy, on_give_up=give_ups, clock=FakeClock(step=11.0))
    loop = ScriptedLoop(*["raise"] * 8)
    supervisor.start("pull:generation", loop)
    await wait_until(lambda: loop.runs == 9)

    assert give_ups.reasons == [] and supervisor.gave_up is None
    assert supervisor.loops["pull:generation"].restarts == 8
    await supervisor.stop()


async def test_after_begin_stop_a_returning_loop_ends_without_a_restart(caplog):
    supervisor = Supervisor(TINY, on_give_up=GiveUps(), clock=FakeClock())
    loop = ScriptedLoop()
    supervisor.start("pull:test", loop)
    await wait_until(lambda: loop.runs == 1)
    supervisor.begin_stop()
    loop.release.set()  # the loop returns, as a stopped consumer's does
    await wait_until(lambda: not supervisor.loops["pull:test"].running)

    for _ in range(10):
        await asyncio.sleep(0.002)
    assert loop.runs == 1
    assert supervisor.loops["pull:test"].restarts == 0
    assert supervisor.loops["pull:test"].last_error is None
    assert "loop returned unexpectedly" not in caplog.text
    await supervisor.stop()


async def test_a_loop_that_raises_during_a_clean_stop_does_not_make_it_give_up():
    give_ups = GiveUps()
    policy = RestartPolicy(base_delay_s=0.001, max_delay_s=0.001, max_restarts=0)
    supervisor = Supervisor(policy, on_give_up=give_ups, clock=FakeClock())
    loop = ScriptedLoop()

    async def fails_when_released() -> None:
        await loop()
        raise RuntimeError("connection draining")

    supervisor.start("pull:test", fails_when_released)
    await wait_until(lambda: loop.runs == 1)
    supervisor.begin_stop()
    loop.release.set()
    await wait_until(lambda: not supervisor.loops["pull:test"].running)
    await supervisor.stop()
    assert give_ups.reasons == []


async def test_stop_cancels_running_loops():
    supervisor = Supervisor(TINY, on_give_up=GiveUps(), clock=FakeClock())
    first, second = ScriptedLoop(), ScriptedLoop()
    supervisor.start("first", first)
    supervisor.start("second", second)
    await wait_until(lambda: first.runs == 1 and second.runs == 1)
    await supervisor.stop()

    assert first.cancelled and second.cancelled
    assert not any(state.running for state in supervisor.loops.values())


async def test_a_loop_name_is_supervised_once():
    supervisor = Supervisor(TINY, on_give_up=GiveUps(), clock=FakeClock())
    supervisor.start("heartbeat", ScriptedLoop())
    with pytest.raises(ValueError):
        supervisor.start("heartbeat", ScriptedLoop())
    await supervisor.stop()
