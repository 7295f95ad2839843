"""prompt_service's handlers as its bootstrap wires them (`build_handlers`), over the
in-memory jobs bucket and event stream, with the offline engine: no servers.

Each command is settled the way the service's consumer settles it (`terra.runtime.worker.settle`),
so "acked" below means what the server would be told.
"""

from __future__ import annotations

import json

import pytest

from contracts.jobs import FailureCode, JobKind, JobStatus
from contracts.prompt import OptimizePrompt, PromptDecision, RecordPromptDecision
from prompt_service.bootstrap import OfflineOnly, build_handlers
from prompt_service.engine import OfflineEngine, Optimization, PromptRequest
from terra.jobs.store import JobStore
from terra.runtime.worker import PermanentFailure, settle
from tests.fakes import FakeEventPublisher, FakeKeyValue, FakeMsg

OPTIMIZED = "prompt.optimized.v1"
DECIDED = "prompt.decision_recorded.v1"
FAILED = "job.failed.v1"


class CountingOptimizer:
    """The offline engine, counting what it was asked."""

    def __init__(self) -> None:
        self.engine = OfflineOnly(OfflineEngine())
        self.requests: list[PromptRequest] = []

    async def optimize(self, request: PromptRequest) -> Optimization:
        self.requests.append(request)
        return await self.engine.optimize(request)


class Prompts:
    """The handlers over fakes, and what they touched (one journal for KV and events)."""

    def __init__(self) -> None:
        self.journal: list[tuple] = []
        self.kv = FakeKeyValue("jobs", self.journal)
        self.events = FakeEventPublisher(self.journal)
        self.optimizer = CountingOptimizer()
        self.handlers = build_handlers(JobStore({JobKind.PROMPT: self.kv}), self.events, self.optimizer)

    async def send(self, body: bytes | str, delivery: int = 1) -> FakeMsg:
        """Deliver a command as the consumer does; the message says how it was settled."""
        msg = FakeMsg(body, num_delivered=delivery)
        await settle(msg, lambda: self.handlers.handle(msg.data, msg.metadata.num_delivered))
        return msg

    async def state(self, job_id: str = "p1"):
        key = self.kv.key_ending(job_id)
        return None if key is None else await self.handlers.jobs.get(key.split(".")[0], job_id)


@pytest.fixture
def prompts() -> Prompts:
    return Prompts()


def optimize(job_id: str = "p1", user_id: str = "alice", **fields) -> str:
    return OptimizePrompt(job_id=job_id, user_id=user_id, prompt="a red fox in the snow",
                          correlation_id=f"req-{job_id}", **fields).model_dump_json()


def decision(final_prompt: str | None, job_id: str = "p1", user_id: str = "alice") -> str:
    return RecordPromptDecision(job_id=job_id, user_id=user_id, final_prompt=final_prompt,
                                message_id="decide-1").model_dump_json()


# --- optimise -----------------------------------------------------------------------------------


async def test_a_result_is_published_once_and_recorded_once(prompts):
    msg = await prompts.send(optimize())

    assert msg.calls == [("ack",)]
    [event] = prompts.events.attempts
    assert event.type == OPTIMIZED and event.job_id == "p1" and "fox" in event.optimized
    assert event.message_id == "p1-completed" and event.correlation_id == "req-p1"
    assert prompts.kv.writes(prompts.kv.key_ending("p1")) == 1  # no queued or running write: recorded as it ends
    job = await prompts.state()
    assert job.status is JobStatus.SUCCEEDED
    assert job.result["optimized"] == event.optimized and job.ending["type"] == OPTIMIZED


async def test_a_redelivery_of_a_finished_job_sends_the_same_ending_and_does_nothing_else(
        prompts):
    await prompts.send(optimize())
    stored = await prompts.state()

    msg = await prompts.send(optimize(), delivery=2)

    assert msg.calls == [("ack",)]
    first, again = prompts.events.attempts
    assert again == first  # the same event under the same message id: the stream drops it
    assert prompts.events.types() == [OPTIMIZED]
    assert len(prompts.optimizer.requests) == 1  # not optimised again
    assert prompts.kv.writes(prompts.kv.key_ending("p1")) == 1 and await prompts.state() == stored


async def test_an_unknown_style_fails_the_job_once_with_invalid_input_and_is_acked(prompts):
    msg = await prompts.send(optimize(style="no-such-style"))

    assert msg.calls == [("ack",)]  # a PermanentFailure: retrying cannot help
    [failed] = prompts.events.attempts
    assert failed.type == FAILED and failed.code is FailureCode.INVALID_INPUT
    assert "no-such-style" in failed.reason
    job = await prompts.state()
    assert job.status is JobStatus.FAILED and job.error.code is FailureCode.INVALID_INPUT


async def test_an_unknown_style_raises_a_permanent_failure(prompts):
    with pytest.raises(PermanentFailure):
        await prompts.handlers.handle(optimize(style="no-such-style").encode())


async def test_an_undecodable_command_with_valid_ids_fails_that_job(prompts):
    body = json.dumps({"type": "prompt.optimize.v1", "job_id": "p1", "user_id": "alice",
                       "prompt": "", "correlation_id": "req-p1"})
    msg = await prompts.send(body)

    assert msg.calls == [("ack",)]
    [failed] = prompts.events.attempts
    assert failed.type == FAILED and failed.code is FailureCode.INVALID_INPUT
    assert failed.job_id == "p1" and failed.user_id == "alice" and "prompt" in failed.reason
    assert failed.correlation_id == "req-p1"
    assert (await prompts.state()).status is JobStatus.FAILED
    assert prompts.optimizer.requests == []


@pytest.mark.parametrize("body", [
    b"not json at all",
    json.dumps({"type": "prompt.optimize.v1", "job_id": "../../etc", "user_id": "alice",
                "prompt": "a fox"}),
    json.dumps({"type": "prompt.optimize.v1", "job_id": "p1", "prompt": "a fox"}),
], ids=["not-json", "bad-job-id", "no-user-id"])
async def test_an_undecodable_command_without_valid_ids_is_dropped(prompts, body):
    msg = await prompts.send(body)

    assert msg.calls == [("ack",)]
    assert prompts.events.attempts == []
    assert [op for op in prompts.kv.ops if op[0] != "get"] == []


async def test_a_dead_letter_fails_its_job_with_delivery_exhausted(prompts):
    await prompts.handlers.dead_letter(optimize().encode())

    [failed] = prompts.events.attempts
    assert failed.type == FAILED and failed.code is FailureCode.DELIVERY_EXHAUSTED
    assert (await prompts.state()).status is JobStatus.FAILED


async def test_an_unattributable_dead_letter_is_dropped(prompts):
    await prompts.handlers.dead_letter(b'{"job_id": 7}')
    assert prompts.events.attempts == [] and prompts.kv.journal == []


# --- decisions ------------------------------------------------------------------------------------


async def test_a_decision_is_stored_before_it_is_published(prompts):
    await prompts.send(optimize())
    prompts.journal.clear()

    msg = await prompts.send(decision("a red fox in the snow"))

    assert msg.calls == [("ack",)]
    assert prompts.journal == [("kv.update", f"jobs/{prompts.kv.key_ending('p1')}"),
                               ("publish", DECIDED)]
    [event] = prompts.events.of_type(DECIDED)
    assert event.decision is PromptDecision.REJECTED  # the original, sent back
    result = (await prompts.state()).result
    assert result["decision"] == "rejected" and result["final_prompt"] == "a red fox in the snow"


async def test_a_decision_whose_publish_failed_is_stored_and_published_on_the_retry(prompts):
    await prompts.send(optimize())
    prompts.events.fail_next(1, TimeoutError())

    first = await prompts.send(decision("a fox, edited by hand"))
    assert [call[0] for call in first.calls] == ["nak"]  # retried after a delay
    assert (await prompts.state()).result["decision"] == "edited"

    retry = await prompts.send(decision("a fox, edited by hand"), delivery=2)
    assert retry.calls == [("ack",)]
    [event] = prompts.events.of_type(DECIDED)
    assert event.decision is PromptDecision.EDITED and event.message_id == "decide-1-recorded"


async def test_a_decision_about_someone_elses_job_is_refused_and_stores_nothing(prompts):
    await prompts.send(optimize())
    before = await prompts.state()

    msg = await prompts.send(decision(None, user_id="mallory"))

    assert msg.calls == [("ack",)]
    assert await prompts.state() == before
    assert prompts.events.of_type(DECIDED) == []
