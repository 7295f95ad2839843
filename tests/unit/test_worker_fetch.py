"""terra.runtime.worker: every exception nats-py 2.16 raises from `PullSubscription.fetch` becomes
the right outcome, and `PullConsumer.run` keeps pulling through all of them."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
import pytest

import terra.runtime.worker
from contracts.jobs import CancelJob
from contracts.topology import GENERATION_WORKERS
from terra.runtime.worker import (
    AgainLater,
    Backoff,
    BrokerUnavailable,
    ConsumerGone,
    PermanentFailure,
    PullConsumer,
    bind,
    fetch,
    handling,
    settle,
)
from tests.fakes import (
    After,
    FakeBinder,
    FakeMsg,
    FakePullSubscription,
    ScriptOverrun,
    wait_until,
)

IDLE = [
    nats.errors.TimeoutError(),
    # The built-in one (`asyncio.TimeoutError` is `TimeoutError` since Python 3.11), raised
    # from `_fetch_n` when the deadline passes between its two requests.
    TimeoutError(),
    nats.js.errors.FetchTimeoutError(),
]
BROKER_FAULTS = [
    nats.js.errors.ServiceUnavailableError(code=503, description="No Responders"),
    nats.js.errors.NoStreamResponseError(),
    nats.js.errors.ServerError(code=500, description="server error"),
    nats.errors.NoRespondersError(),
    nats.errors.ConnectionReconnectingError(),
    nats.errors.OutboundBufferLimitError(),
    nats.errors.StaleConnectionError(),
    nats.errors.SlowConsumerError(subject="s", reply="", sid=1, sub=None),
]
CONSUMER_GONE = [
    nats.js.errors.NotFoundError(code=404, description="consumer not found"),
    nats.errors.BadSubscriptionError(),
    ValueError("nats: invalid subscription"),
    nats.js.errors.APIError(code=409, description="Leadership Change"),
    nats.js.errors.APIError(code=400, description="Bad Request"),
]
# Not a state of the broker `fetch` can wait out: the supervisor logs and restarts the loop
# (a connection closed for good then makes it give up and the process exit non-zero).
BUGS_AND_CLOSED = [
    RuntimeError("a bug"),
    nats.errors.ConnectionClosedError(),
    nats.errors.ConnectionDrainingError(),
    nats.errors.Error("nats: next_msg cannot be used in async subscriptions"),
    ValueError("nats: invalid batch size"),  # our bad argument: a bug, not a lost consumer
]


def name_of(exc: BaseException) -> str:
    return type(exc).__name__


# --- fetch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", IDLE, ids=["nats-TimeoutError", "builtin-TimeoutError",
                                             "FetchTimeoutError"])
async def test_an_idle_timeout_of_any_type_means_nothing_to_do(error):
    assert await fetch(FakePullSubscription([error]), 1, 0.01) == []


@pytest.mark.parametrize("error", BROKER_FAULTS, ids=name_of)
async def test_a_broker_fault_is_one_to_wait_out(error):
    with pytest.raises(BrokerUnavailable) as raised:
        await fetch(FakePullSubscription([error]), 1, 0.01)
    assert raised.value.__cause__ is error
    assert type(error).__name__ in str(raised.value)


@pytest.mark.parametrize("error", CONSUMER_GONE, ids=lambda e: f"{name_of(e)}-{e}")
async def test_a_vanished_consumer_or_subscription_must_be_bound_again(error):
    with pytest.raises(ConsumerGone) as raised:
        await fetch(FakePullSubscription([error]), 1, 0.01)
    assert raised.value.__cause__ is error


@pytest.mark.parametrize("error", BUGS_AND_CLOSED, ids=name_of)
async def test_anything_else_propagates_unchanged(error):
    with pytest.raises(type(error)) as raised:
        await fetch(FakePullSubscription([error]), 1, 0.01)
    assert raised.value is error


async def test_fetch_returns_the_messages_and_asks_for_the_batch_and_timeout_given():
    messages = [FakeMsg(), FakeMsg()]
    subscription = FakePullSubscription([messages])
    assert await fetch(subscription, 3, 0.25) == messages
    assert subscription.fetches == [(3, 0.25)]


class FakeJetStream:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def pull_subscribe_bind(self, durable, stream):
        raise self.error


@pytest.mark.parametrize(("error", "outcome"), [
    (nats.errors.TimeoutError(), BrokerUnavailable),
    (nats.js.errors.NoStreamResponseError(), BrokerUnavailable),
    (nats.js.errors.NotFoundError(code=404, description="consumer not found"), ConsumerGone),
], ids=lambda v: v.__name__ if isinstance(v, type) else name_of(v))
async def test_binding_translates_broker_faults_and_a_missing_consumer(error, outcome):
    with pytest.raises(outcome):
        await bind(FakeJetStream(error), GENERATION_WORKERS)


# --- PullConsumer.run ------------------------------------------------------------------------


class RecordedBackoff(Backoff):
    """Each fault pause recorded instead of waited (0.1-2 s each)."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[type[Exception]] = []

    async def pause(self, stopping, why: str, exc: Exception, what: str) -> None:
        self.pauses.append(type(exc))
        await asyncio.sleep(0)


class QuickPullConsumer(PullConsumer):
    """The real loop with a recorded backoff."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, backoff=RecordedBackoff(), **kwargs)

    @property
    def pauses(self) -> list[type[Exception]]:
        return self._backoff.pauses


class Handler:
    """Records what it is handed; blocks on `gate` while it is cleared, then acks."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.handled: list[FakeMsg] = []
        self.running = 0
        self.most_running = 0
        self.cancelled = 0
        self.gate = asyncio.Event()
        if not blocked:
            self.gate.set()

    async def __call__(self, msg: FakeMsg) -> None:
        self.handled.append(msg)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            await msg.ack()  # a handler settles its own message
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def start(consumer: PullConsumer) -> asyncio.Task:
    return asyncio.create_task(consumer.run())


async def stop(consumer: PullConsumer, task: asyncio.Task, grace_s: float = 1.0) -> None:
    await consumer.stop(grace_s)
    await asyncio.wait_for(task, 5)  # run() ends once stopped; re-raises what ended it


async def test_the_loop_pulls_through_every_fault_and_binds_again_after_a_vanished_consumer(
        monkeypatch):
    msg = FakeMsg()
    faults = [*IDLE, *BROKER_FAULTS, *CONSUMER_GONE]
    subscription = FakePullSubscription([*faults, [msg]])
    binder = FakeBinder(subscription)
    monkeypatch.setattr(terra.runtime.worker, "bind", binder)
    handler = Handler()
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: handler.handled)
    await stop(consumer, task)

    assert handler.handled == [msg] and msg.calls == [("ack",)]
    assert consumer.pauses == ([BrokerUnavailable] * len(BROKER_FAULTS)
                               + [ConsumerGone] * len(CONSUMER_GONE))
    assert binder.binds == 1 + len(CONSUMER_GONE)


async def test_a_vanished_consumer_is_dropped_and_the_next_binding_is_pulled(monkeypatch):
    gone = FakePullSubscription([nats.js.errors.NotFoundError(code=404, description="gone")])
    msg = FakeMsg()
    fresh = FakePullSubscription([[msg]])
    binder = FakeBinder(gone, fresh)
    monkeypatch.setattr(terra.runtime.worker, "bind", binder)
    handler = Handler()
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: handler.handled)
    await stop(consumer, task)

    assert handler.handled == [msg]
    assert gone.unsubscribed and len(gone.fetches) == 1
    assert binder.binds == 2
    assert fresh.unsubscribed  # stop() closes our subscription


async def test_a_broker_fault_is_waited_out_with_the_real_pause(monkeypatch):
    msg = FakeMsg()
    subscription = FakePullSubscription([nats.errors.NoRespondersError(), [msg]])
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(subscription))
    handler = Handler()
    consumer = PullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: handler.handled)
    await stop(consumer, task)  # re-raises anything that escaped run()
    assert handler.handled == [msg]
    assert len(subscription.fetches) >= 2  # pulled again after the fault


async def test_fault_pauses_grow_to_their_cap_and_start_over_after_a_success(caplog):
    caplog.set_level(logging.WARNING, logger="terra.runtime.worker")
    backoff = Backoff(base_s=0.2, max_s=2.0, draw=lambda: 1.0)  # each step's ceiling
    stopped = asyncio.Event()
    stopped.set()  # a stop cuts every pause short: the test waits for none
    fault = BrokerUnavailable("no leader")
    for _ in range(6):
        await backoff.pause(stopped, "broker unavailable", fault, "generation-workers")
    backoff.reset()
    await backoff.pause(stopped, "broker unavailable", fault, "generation-workers")
    assert [r.retry_in_s for r in caplog.records] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 0.2]


async def test_never_more_than_concurrency_messages_in_hand(monkeypatch):
    messages = [FakeMsg() for _ in range(5)]
    subscription = FakePullSubscription([messages])
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(subscription))
    handler = Handler(blocked=True)
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, concurrency=2,
                                 fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: handler.running == 2)
    for _ in range(20):  # the loop gets every chance to take more, and must not
        await asyncio.sleep(0)
    assert handler.handled == messages[:2] and len(consumer.in_hand) == 2
    assert subscription.fetches == [(2, 0.01)]  # it asked for no more than it had room for

    handler.gate.set()
    await wait_until(lambda: len(handler.handled) == 5 and not consumer.in_hand)
    await stop(consumer, task)
    assert handler.most_running == 2
    assert all(batch <= 2 for batch, _ in subscription.fetches)
    assert [m.calls for m in messages] == [[("ack",)]] * 5


async def test_a_message_whose_handler_fails_frees_its_place_and_the_stack_is_logged(
        monkeypatch, caplog):
    first, second = FakeMsg(), FakeMsg()
    subscription = FakePullSubscription([[first], [second]])
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(subscription))
    handled = []

    async def handle(msg):
        handled.append(msg)
        if msg is first:
            raise RuntimeError("handler bug")

    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handle, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: len(handled) == 2)
    await stop(consumer, task)
    failures = [r for r in caplog.records if r.getMessage() == "message handling failed"]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    assert failures[0].exc_info[0] is RuntimeError


async def test_pulling_is_reported_while_the_loop_runs_and_not_once_stopped(monkeypatch):
    subscription = FakePullSubscription([])
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(subscription))
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, Handler(), fetch_timeout_s=0.01)
    assert not consumer.pulling  # never pulled yet
    task = start(consumer)
    await wait_until(lambda: len(subscription.fetches) >= 2)
    assert consumer.pulling
    await stop(consumer, task)
    assert not consumer.pulling


async def test_stop_hands_back_what_is_still_in_hand_after_the_grace_period(monkeypatch):
    msg = FakeMsg()
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(FakePullSubscription([[msg]])))
    handler = Handler(blocked=True)
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: handler.running == 1)
    await stop(consumer, task, grace_s=0.01)
    assert handler.cancelled == 1
    assert msg.calls == [("nak", None)]
    assert not consumer.in_hand


async def test_stop_lets_work_that_finishes_within_the_grace_period_settle_itself(monkeypatch):
    msg = FakeMsg()
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(FakePullSubscription([[msg]])))
    handler = Handler(blocked=True)
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: handler.running == 1)
    stopping = asyncio.create_task(consumer.stop(5.0))
    await wait_until(lambda: not consumer.pulling)  # stop has begun and waits for the work
    handler.gate.set()
    await asyncio.wait_for(stopping, 5)
    await asyncio.wait_for(task, 5)
    assert handler.cancelled == 0
    assert msg.calls == [("ack",)]


async def test_a_message_that_arrives_while_stopping_is_handed_back_not_handled(monkeypatch):
    arrives, msg = asyncio.Event(), FakeMsg()
    subscription = FakePullSubscription([After(arrives, [msg])])
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(subscription))
    handler = Handler()
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    await wait_until(lambda: subscription.fetches)  # a pull is pending
    await consumer.stop(1.0)  # nothing in hand: stops at once
    arrives.set()  # the pending pull delivers after all
    await asyncio.wait_for(task, 5)
    for _ in range(10):  # a handler task, if one was started, gets to run
        await asyncio.sleep(0)
    assert handler.handled == []
    assert msg.calls == [("nak", None)]


async def test_a_consumer_that_finished_a_message_yields_while_idle(monkeypatch):
    """Regression: with work done and fetches that return at once, the loop must still let
    other tasks run (a spinning loop starves the heartbeat and every other loop)."""
    msg = FakeMsg()
    subscription = FakePullSubscription([[msg]], then=nats.errors.TimeoutError,
                                        max_fetches=200)
    monkeypatch.setattr(terra.runtime.worker, "bind", FakeBinder(subscription))
    handler = Handler()  # completes at once
    consumer = QuickPullConsumer(None, GENERATION_WORKERS, handler, fetch_timeout_s=0.01)
    task = start(consumer)
    turns = 0
    while not handler.handled and turns < 100:
        await asyncio.sleep(0)
        turns += 1
    for _ in range(20):  # this test is the concurrent task: it must get to run
        await asyncio.sleep(0)
    assert handler.handled == [msg]
    assert not task.done(), f"the loop ended: {task.exception()!r}"
    assert len(subscription.fetches) < 200
    await stop(consumer, task)


async def test_the_spin_tripwire_of_the_fake_subscription_fires():
    """The regression test above relies on `max_fetches`: check it does stop a loop."""
    subscription = FakePullSubscription([], then=nats.errors.TimeoutError, max_fetches=3)
    for _ in range(3):
        assert await fetch(subscription, 1, 0.01) == []
    with pytest.raises(ScriptOverrun):
        await fetch(subscription, 1, 0.01)


# --- settle ---------------------------------------------------------------------------------


async def test_settle_acks_finished_work():
    msg = FakeMsg()

    async def work():
        return None

    await settle(msg, work)
    assert msg.calls == [("ack",)]


async def test_settle_naks_a_failed_attempt_with_a_delay_that_grows_with_deliveries():
    msg = FakeMsg(num_delivered=3)

    async def work():
        raise RuntimeError("flaky")

    await settle(msg, work)
    [(action, delay)] = msg.calls
    assert action == "nak" and 2.0 <= delay <= 4.0  # the third step (4 s), jittered


async def test_settle_acks_a_command_that_can_never_succeed():
    msg = FakeMsg(num_delivered=1)

    async def work():
        raise PermanentFailure("bad input")

    await settle(msg, work)
    assert msg.calls == [("ack",)]


async def test_settle_survives_an_ack_that_cannot_reach_the_server(caplog):
    msg = FakeMsg()

    async def unreachable_ack():
        raise nats.errors.ConnectionClosedError

    msg.ack = unreachable_ack

    async def work():
        return None

    await settle(msg, work)  # no exception: the message is redelivered after ack_wait
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "could not settle a message; it will be redelivered"]


async def test_work_to_be_done_again_later_is_handed_back_with_its_delay(caplog):
    msg = FakeMsg()

    async def erase() -> None:
        raise AgainLater(60.0)

    await settle(msg, erase)
    assert msg.calls == [("nak", 60.0)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # not a failure


async def test_handling_decodes_runs_and_settles():
    seen = []

    async def use_case(command: CancelJob) -> None:
        seen.append(command.job_id)

    good = FakeMsg(CancelJob(job_id="j1", user_id="u1", kind="training").model_dump_json())
    await handling(CancelJob, use_case)(good)
    assert seen == ["j1"] and good.calls == [("ack",)]
    bad = FakeMsg(b'{"job_id": "a.b"}')  # undecodable: refused for good, never run
    await handling(CancelJob, use_case)(bad)
    assert seen == ["j1"] and bad.calls == [("ack",)]
