"""The gateway's admission use cases as its bootstrap wires them (`build_parts`), over
in-memory buckets, object storage and event stream, and a broker that keeps what it is
sent: a refused job leaves nothing behind; an admitted one leaves its slot, its queued
record, one command and one `queued` event; a retry with the same key is the same job.
And each refusal's HTTP answer, through the app over those parts. No servers."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from types import SimpleNamespace

import httpx
import pytest

from contracts.generation import BaseModelName
from contracts.ids import new_id
from contracts.jobs import JobKind, JobStatus
from contracts.topology import OBJECTS
from contracts.training import DatasetImage, DatasetManifest, ModelRecord, ModelStatus
from gateway.admission.generation import GenerationRequest
from gateway.admission.training import TrainingRequest, trigger_word_for
from gateway.app import create_app
from gateway.bootstrap import build_parts
from gateway.commands import cancel_job
from gateway.config import GatewaySettings
from gateway.deps import get_caller
from gateway.refusals import (
    DatasetNotFound,
    JobAlreadyEnded,
    JobNotFound,
    ModelNotFound,
    ModelNotReady,
    TooManyGenerations,
    TrainingRunning,
)
from gateway.security import Caller
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.records.models import ModelStore
from tests.fakes import FakeEventPublisher, FakeKeyValue, FakeObjectStorage

USER = "u1"


class FakeBroker:
    """Keeps each command published; a message id seen before is a duplicate, as the
    command streams' `Nats-Msg-Id` window makes it."""

    def __init__(self) -> None:
        self.stored: list[dict] = []
        self.publishes = 0

    async def publish(self, body: bytes, subject: str, *, headers: dict[str, str],
                      **_options) -> SimpleNamespace:
        self.publishes += 1
        duplicate = any(c["message_id"] == headers["Nats-Msg-Id"] for c in self.stored)
        if not duplicate:
            self.stored.append(json.loads(body))
        return SimpleNamespace(duplicate=duplicate)


class FakeQueues:
    """A JetStream context that answers `commands_waiting`: `waiting` on every queue."""

    waiting = 0

    async def stream_info(self, _stream: str, subjects_filter: str) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(subjects={subjects_filter: self.waiting}))


class Gateway:
    """The parts over fakes, and the fakes themselves."""

    def __init__(self, **settings) -> None:
        self.settings = GatewaySettings(**settings)
        self.broker = FakeBroker()
        self.queues = FakeQueues()
        self.events = FakeEventPublisher()
        self.storage = FakeObjectStorage()
        self.jobs = JobStore({kind: FakeKeyValue(f"jobs-{kind.value}") for kind in JobKind})
        self.models = ModelStore(FakeKeyValue("models"))
        self.slots = QueueSlots(FakeKeyValue("slots"), JobKind.GENERATION.value)
        self.parts = build_parts(
            self.settings, broker=self.broker, nc=None, js=self.queues, auth=None,
            revocations=None, hub=None, storage=self.storage, jobs=self.jobs,
            models=self.models, images=None, generation_slots=self.slots,
            events=self.events, prompt_rate=None)

    async def dataset(self) -> str:
        dataset_id = new_id()
        image = DatasetImage(image_id=new_id(), filename="a.jpg", width=512, height=512,
                             key=OBJECTS.upload_key(USER, dataset_id, "a.jpg"))
        manifest = DatasetManifest(dataset_id=dataset_id, user_id=USER, images=[image])
        await self.storage.put_bytes(OBJECTS.upload_key(USER, dataset_id, "manifest.json"),
                                     manifest.model_dump_json().encode())
        return dataset_id

    async def model(self, status: ModelStatus) -> str:
        model_id = new_id()
        await self.models.create(ModelRecord(model_id=model_id, user_id=USER,
                                             trigger_word="zqvkt", status=status))
        return model_id

    async def start(self, job_id: str) -> None:
        await self.jobs.update(USER, job_id, lambda job: job.model_copy(update={
            "status": JobStatus.RUNNING}))


def generation(**changes) -> GenerationRequest:
    return GenerationRequest(**{
        "prompt": "a lighthouse", "model": "auto", "lora_id": None, "lora_scale": 1.0,
        "width": 512, "height": 512, "steps": None, "guidance": None, "seed": 7,
        "num_images": 1, **changes})


def training(dataset_id: str, **changes) -> TrainingRequest:
    return TrainingRequest(**{"dataset_id": dataset_id, "trigger_word": None, "steps": 10,
                              "rank": 4, "learning_rate": 1e-4, "resolution": 512,
                              **changes})


# --- generation ---------------------------------------------------------------------------


async def test_an_admitted_generation_holds_a_slot_a_queued_record_and_one_command():
    gateway = Gateway()
    gateway.queues.waiting = 3
    admitted = await gateway.parts.generation.admit(USER, generation())

    assert (admitted.queue_position, admitted.model, admitted.lora_id) == (
        3, BaseModelName.SCHNELL, None)
    assert await gateway.slots.held(USER) == [admitted.job_id]
    job = await gateway.jobs.get(USER, admitted.job_id, JobKind.GENERATION)
    assert job.status is JobStatus.QUEUED
    [command] = gateway.broker.stored
    assert command["job_id"] == admitted.job_id and command["seed"] == 7
    assert command["steps"] == 4  # schnell's default
    [queued] = gateway.events.of_type("generation.queued.v1")
    assert queued.job_id == admitted.job_id and queued.position == 3


async def test_a_generation_over_the_cap_is_refused_and_leaves_nothing():
    gateway = Gateway(max_generations_per_user=1)
    first = await gateway.parts.generation.admit(USER, generation())
    with pytest.raises(TooManyGenerations, match="You have 1 generations queued"):
        await gateway.parts.generation.admit(USER, generation())
    assert await gateway.slots.held(USER) == [first.job_id]
    assert len(gateway.broker.stored) == 1 and len(gateway.events.published) == 1


async def test_a_generation_runs_on_a_lora_of_the_callers_only_when_it_is_ready():
    gateway = Gateway()
    admission = gateway.parts.generation
    with pytest.raises(ModelNotFound):
        await admission.admit(USER, generation(lora_id=new_id()))
    training_model = await gateway.model(ModelStatus.TRAINING)
    with pytest.raises(ModelNotReady, match="is training"):
        await admission.admit(USER, generation(lora_id=training_model))
    assert gateway.broker.stored == []

    ready = await gateway.model(ModelStatus.READY)
    admitted = await admission.admit(USER, generation())  # auto: the newest ready LoRA
    assert (admitted.model, admitted.lora_id) == (BaseModelName.DEV, ready)
    assert gateway.broker.stored[0]["steps"] == 28  # dev's default


async def test_a_keyed_generation_retried_is_the_same_job_and_runs_once():
    gateway = Gateway()
    admission = gateway.parts.generation
    first = await admission.admit(USER, generation(idempotency_key="k"))
    again = await admission.admit(USER, generation(idempotency_key="k"))
    assert again.job_id == first.job_id
    assert len(gateway.broker.stored) == 1  # resent, and dropped as a duplicate
    await gateway.start(first.job_id)
    publishes = gateway.broker.publishes
    started = await admission.admit(USER, generation(idempotency_key="k"))
    assert (started.job_id, started.queue_position) == (first.job_id, 0)
    assert gateway.broker.publishes == publishes  # a started job: nothing sent again
    assert await gateway.slots.held(USER) == [first.job_id]


# --- training -----------------------------------------------------------------------------


async def test_a_training_of_a_photo_set_that_is_not_there_is_refused():
    gateway = Gateway()
    dataset_id = new_id()
    with pytest.raises(DatasetNotFound, match=f"No dataset {dataset_id}."):
        await gateway.parts.training.admit(USER, training(dataset_id))
    assert await gateway.models.list(USER) == [] and gateway.broker.stored == []


async def test_an_admitted_training_records_its_model_and_sends_one_command():
    gateway = Gateway()
    dataset_id = await gateway.dataset()
    admitted = await gateway.parts.training.admit(
        USER, training(dataset_id, idempotency_key="k"))

    assert admitted.trigger_word == trigger_word_for(USER, "k")
    model = await gateway.models.get(USER, admitted.model_id)
    assert model.job_id == admitted.job_id and model.trigger_word == admitted.trigger_word
    job = await gateway.jobs.get(USER, admitted.job_id, JobKind.TRAINING)
    assert job.status is JobStatus.QUEUED and job.result == {"model_id": admitted.model_id}
    [command] = gateway.broker.stored
    assert (command["model_id"], command["trigger_word"]) == (admitted.model_id,
                                                              admitted.trigger_word)
    assert len(gateway.events.of_type("training.queued.v1")) == 1

    await gateway.start(admitted.job_id)
    again = await gateway.parts.training.admit(USER, training(dataset_id, idempotency_key="k"))
    assert again == admitted and len(gateway.broker.stored) == 1


async def test_a_second_training_while_one_runs_is_refused():
    gateway = Gateway()
    dataset_id = await gateway.dataset()
    await gateway.parts.training.admit(USER, training(dataset_id, idempotency_key="a"))
    with pytest.raises(TrainingRunning):
        await gateway.parts.training.admit(USER, training(dataset_id, idempotency_key="b"))
    assert len(gateway.broker.stored) == 1 and len(await gateway.models.list(USER)) == 1


# --- their HTTP answers -------------------------------------------------------------------


@pytest.fixture
async def http():
    gateway = Gateway(max_generations_per_user=1)

    @asynccontextmanager
    async def over_fakes(_settings: GatewaySettings):
        yield gateway.parts

    app = create_app(gateway.settings, parts_from=over_fakes)
    app.dependency_overrides[get_caller] = lambda: Caller(user_id=USER, email=None,
                                                          token_id=None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_each_refusal_is_its_problem(http):
    body = {"prompt": "a lighthouse", "width": 512, "height": 512}
    assert (await http.post("/api/generate/image", json=body)).status_code == 202
    refused = await http.post("/api/generate/image", json=body)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/too-many-jobs") and problem["status"] == 429
    assert problem["detail"] == ("You have 1 generations queued or running; wait for one "
                                 "to finish.")

    model_id, dataset_id = new_id(), new_id()
    missing = await http.post("/api/generate/image", json=body | {"lora_id": model_id})
    assert missing.status_code == 404 and missing.json()["detail"] == f"No model {model_id}."
    missing = await http.post("/api/training/start", json={"dataset_id": dataset_id})
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"No dataset {dataset_id}."


# --- cancelling ---------------------------------------------------------------------------


async def test_a_cancel_is_one_command_for_the_callers_live_job_and_refused_otherwise():
    gateway = Gateway()
    admitted = await gateway.parts.generation.admit(USER, generation())
    commands = gateway.parts.commands

    await cancel_job(gateway.jobs, commands, USER, admitted.job_id, JobKind.GENERATION)
    cancel = gateway.broker.stored[-1]
    assert cancel["type"] == "job.cancel.v1" and cancel["job_id"] == admitted.job_id

    sent = len(gateway.broker.stored)
    with pytest.raises(JobNotFound, match=f"No training {admitted.job_id}."):
        await cancel_job(gateway.jobs, commands, USER, admitted.job_id, JobKind.TRAINING)
    with pytest.raises(JobNotFound):  # another user's job is not found, not refused
        await cancel_job(gateway.jobs, commands, "u2", admitted.job_id, JobKind.GENERATION)
    await gateway.jobs.update(USER, admitted.job_id, lambda job: job.model_copy(update={
        "status": JobStatus.SUCCEEDED}))
    with pytest.raises(JobAlreadyEnded, match="has already succeeded"):
        await cancel_job(gateway.jobs, commands, USER, admitted.job_id, JobKind.GENERATION)
    assert len(gateway.broker.stored) == sent  # a refusal sends nothing


async def test_a_cancel_refusal_is_its_problem(http):
    body = {"prompt": "a lighthouse", "width": 512, "height": 512}
    job_id = (await http.post("/api/generate/image", json=body)).json()["job_id"]
    answer = await http.post(f"/api/generate/{job_id}/cancel")
    assert answer.status_code == 202
    assert answer.json() == {"job_id": job_id, "status": "cancel_requested"}
    unknown = await http.post(f"/api/training/{job_id}/cancel")  # not a training
    assert unknown.status_code == 404 and unknown.json()["detail"] == f"No training {job_id}."
    assert unknown.headers["content-type"] == "application/problem+json"
