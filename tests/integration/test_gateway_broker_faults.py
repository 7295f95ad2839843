"""The gateway in-process over a real nats-server and S3, with faults injected where a
stream leader election would put them: every fault is a 503 with Retry-After (never a
500), a retry with the same Idempotency-Key completes the same job and it is sent once,
and `/ready` says which domains have a live worker within a second."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
from fastapi import Request

from contracts import topology
from contracts.ids import new_id
from contracts.jobs import JobKind, JobState, JobStatus
from contracts.topology import OBJECTS, active_training_key
from contracts.training import DatasetImage, DatasetManifest
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.deps import get_caller
from gateway.readiness import CHECK_CAP_S
from gateway.security import Caller
from terra.errors import StorageError
from terra.nats.provisioning import provision
from terra.ops.servers import EmbeddedNats
from terra.records.objects import ObjectStorage
from terra.runtime.liveness import Heartbeat, WorkLoad

pytestmark = pytest.mark.integration
NATS_PY_TIMEOUT_S = 5.0  # nats-py's default wait for one JetStream call

NO_LEADER = nats.js.errors.NoStreamResponseError
ELECTION_FAULTS = [NO_LEADER(), nats.errors.TimeoutError(), nats.errors.NoRespondersError(),
                   nats.js.errors.ServiceUnavailableError(),
                   nats.errors.ConnectionReconnectingError()]


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> EmbeddedNats:
    """A server of this module's own, so queue counts are this module's, and it may be
    stopped (no auth: what is tested here is the gateway's answers, not its credential)."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats-faults"), auth=False).start()

    async def provision_all() -> None:  # as `terra provision` does
        nc = await nats.connect(server.url)
        await provision(nc, consumers=topology.CONSUMERS)
        await nc.drain()

    asyncio.run(provision_all())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker_url(broker) -> str:
    return broker.url


@pytest.fixture(scope="module")
def settings(broker_url, s3) -> GatewaySettings:
    return GatewaySettings(nats_url=broker_url, s3_endpoint=s3.endpoint,
                           s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
                           log_format="text")


@pytest.fixture(scope="module")
async def app(settings):
    app = create_app(settings)

    async def caller(request: Request) -> Caller:  # who calls: a header, in these tests
        return Caller(user_id=request.headers["x-test-user"], email=None, token_id=None)

    app.dependency_overrides[get_caller] = caller
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def parts(app):
    return app.state.parts


@pytest.fixture
async def http(app):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:
        yield client


@pytest.fixture
async def js(broker_url):
    nc = await nats.connect(broker_url)
    yield nc.jetstream()
    await nc.drain()


class Faulty:
    """`target` whose `method` raises `error` on its next `times` calls; with `after`, the
    call is made first (a publish stored whose ack was lost)."""

    def __init__(self, target, method: str, error: Exception, *, times: int = 1,
                 after: bool = False) -> None:
        self._target, self._method, self._error = target, method, error
        self.remaining, self._after = times, after

    def __getattr__(self, name):
        real = getattr(self._target, name)
        if name != self._method:
            return real

        async def call(*args, **kwargs):
            if self.remaining <= 0:
                return await real(*args, **kwargs)
            self.remaining -= 1
            if self._after:
                await real(*args, **kwargs)
            raise self._error

        return call


def user() -> tuple[str, dict[str, str]]:
    user_id = new_id()
    return user_id, {"x-test-user": user_id}


async def dataset_of(settings: GatewaySettings, user_id: str) -> str:
    dataset_id = new_id()
    image = DatasetImage(image_id=new_id(), key=OBJECTS.upload_key(user_id, dataset_id, "a.jpg"),
                         filename="a.jpg", width=512, height=512)
    manifest = DatasetManifest(dataset_id=dataset_id, user_id=user_id, images=[image])
    await ObjectStorage.from_settings(settings).put_bytes(
        OBJECTS.upload_key(user_id, dataset_id, "manifest.json"),
        manifest.model_dump_json().encode(), "application/json")
    return dataset_id


async def commands_for(js, stream: str, job_id: str) -> list[dict]:
    """The commands about `job_id` the stream holds (read by sequence: no consumer)."""
    state = (await js.stream_info(stream)).state
    found = []
    for seq in range(state.first_seq, state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue
        body = json.loads(msg.data)
        if body.get("job_id") == job_id:
            found.append(body)
    return found


async def queued_events(js, domain: str, user_id: str) -> list[dict]:
    subject = topology.event_subject(domain, "queued", user_id)
    info = await js.stream_info(topology.EVENTS.name, subjects_filter=subject)
    if not (info.state.subjects or {}).get(subject):
        return []
    last = await js.get_last_msg(topology.EVENTS.name, subject)
    return [json.loads(last.data)] * info.state.subjects[subject]


# --- every fault is a 503 ----------------------------------------------------------------


@pytest.mark.parametrize("error", ELECTION_FAULTS, ids=lambda e: type(e).__name__)
async def test_a_broker_fault_in_a_route_is_a_503_with_retry_after(http, parts, monkeypatch,
                                                                   error):
    _user_id, headers = user()
    monkeypatch.setattr(parts, "jobs", Faulty(parts.jobs, "get", error))
    response = await http.get(f"/api/jobs/{new_id()}", headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["type"].endswith("/unavailable")


async def test_object_storage_not_answering_is_a_503_not_a_missing_dataset(http, parts,
                                                                          monkeypatch):
    _user_id, headers = user()
    training = parts.training
    monkeypatch.setattr(training, "storage", Faulty(training.storage, "get_bytes", StorageError(
        "object storage unreachable: connection refused")))
    response = await http.post("/api/training/start", headers=headers,
                               json={"dataset_id": new_id()})
    assert response.status_code == 503 and "retry-after" in response.headers
    missing = await http.post("/api/training/start", headers=headers,
                              json={"dataset_id": new_id()})
    assert missing.status_code == 404  # storage answers again: this dataset is not there


@pytest.mark.slow
async def test_while_nats_is_away_requests_answer_503_in_bounded_time(http, broker, settings):
    _user_id, headers = user()
    broker.stop()
    try:
        # Answered on the gateway's own limit per call (settings.nats_request_timeout_s),
        # before nats-py's 5 s default could have ended even one call.
        assert settings.nats_request_timeout_s < NATS_PY_TIMEOUT_S
        response = await asyncio.wait_for(http.get(f"/api/jobs/{new_id()}", headers=headers),
                                          NATS_PY_TIMEOUT_S)
        assert response.status_code == 503, response.text
        assert "retry-after" in response.headers
        # Answered before a hung check's own cap: the ready deadline, not the hang.
        ready = await asyncio.wait_for(http.get("/ready"), CHECK_CAP_S)
        assert ready.status_code == 503
    finally:
        broker.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the gateway reconnects on its own
        response = await http.get(f"/api/jobs/{new_id()}", headers=headers)
        if response.status_code == 404:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 404


# --- training start: retries and races ---------------------------------------------------


async def test_an_empty_training_queue_queues_at_position_zero(http, js, settings):
    await js.purge_stream(topology.TRAINING_COMMANDS.name)
    user_id, headers = user()
    dataset_id = await dataset_of(settings, user_id)
    response = await http.post("/api/training/start", headers=headers,
                               json={"dataset_id": dataset_id, "steps": 1})
    assert response.status_code == 202, response.text
    [queued] = await queued_events(js, "training", user_id)
    assert queued["job_id"] == response.json()["job_id"] and queued["position"] == 0


FAULT_POINTS = {
    "slot": ("models", "claim_active", NO_LEADER(), False),
    "model record": ("models", "create", NO_LEADER(), False),
    "job record": ("jobs", "create", nats.errors.TimeoutError(), False),
    "queue count": ("js", "stream_info", nats.errors.TimeoutError(), False),
    "command lost": ("broker", "publish", NO_LEADER(), False),
    "command stored, ack lost": ("broker", "publish", nats.errors.TimeoutError(), True),
}


@pytest.mark.parametrize("point", FAULT_POINTS)
async def test_a_retry_after_a_fault_mid_start_completes_the_same_training_once(
    http, parts, js, settings, monkeypatch, point
):
    user_id, headers = user()
    dataset_id = await dataset_of(settings, user_id)
    headers |= {"Idempotency-Key": f"start-{point}"}
    body = {"dataset_id": dataset_id, "steps": 1}
    part, method, error, after = FAULT_POINTS[point]
    holder = parts.commands if part == "broker" else parts.training  # what the start uses
    monkeypatch.setattr(holder, part, Faulty(getattr(holder, part), method, error,
                                              after=after))

    failed = await http.post("/api/training/start", headers=headers, json=body)
    assert failed.status_code == 503, failed.text
    assert int(failed.headers["retry-after"]) > 0

    retried = await http.post("/api/training/start", headers=headers, json=body)
    assert retried.status_code == 202, retried.text
    again = await http.post("/api/training/start", headers=headers, json=body)
    assert again.status_code == 202 and again.json() == retried.json()  # not a 409

    job_id, model_id = retried.json()["job_id"], retried.json()["model_id"]
    [command] = await commands_for(js, topology.TRAINING_COMMANDS.name, job_id)
    assert command["model_id"] == model_id
    assert command["trigger_word"] == retried.json()["trigger_word"]
    assert len(await queued_events(js, "training", user_id)) == 1
    job = await parts.jobs.get(user_id, job_id)
    assert job.status is JobStatus.QUEUED and job.result["model_id"] == model_id
    model = await parts.models.get(user_id, model_id)
    assert model.job_id == job_id and model.trigger_word == retried.json()["trigger_word"]


async def test_a_lost_queued_event_still_answers_202_and_the_retry_publishes_it(
    http, parts, js, settings, monkeypatch
):
    user_id, headers = user()
    dataset_id = await dataset_of(settings, user_id)
    headers |= {"Idempotency-Key": "start-1"}
    training = parts.training
    monkeypatch.setattr(training, "events", Faulty(training.events, "publish", NO_LEADER()))
    first = await http.post("/api/training/start", headers=headers,
                            json={"dataset_id": dataset_id})
    assert first.status_code == 202, first.text  # the command is on its way
    assert await queued_events(js, "training", user_id) == []
    second = await http.post("/api/training/start", headers=headers,
                             json={"dataset_id": dataset_id})
    assert second.status_code == 202 and second.json() == first.json()
    assert len(await queued_events(js, "training", user_id)) == 1
    assert len(await commands_for(js, topology.TRAINING_COMMANDS.name,
                                  first.json()["job_id"])) == 1


async def test_concurrent_starts_with_one_key_make_one_training(http, js, settings):
    user_id, headers = user()
    dataset_id = await dataset_of(settings, user_id)
    headers |= {"Idempotency-Key": "double-click"}
    answers = await asyncio.gather(*(
        http.post("/api/training/start", headers=headers, json={"dataset_id": dataset_id})
        for _ in range(4)))
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
    job_id = answers[0].json()["job_id"]
    assert len(await commands_for(js, topology.TRAINING_COMMANDS.name, job_id)) == 1
    assert len(await queued_events(js, "training", user_id)) == 1


async def test_concurrent_starts_with_different_keys_one_wins_the_rest_409(http, js, settings):
    user_id, headers = user()
    dataset_id = await dataset_of(settings, user_id)
    answers = await asyncio.gather(*(
        http.post("/api/training/start", headers=headers | {"Idempotency-Key": f"k{i}"},
                  json={"dataset_id": dataset_id})
        for i in range(4)))
    assert sorted(a.status_code for a in answers) == [202, 409, 409, 409], [
        a.text for a in answers]
    [winner] = [a for a in answers if a.status_code == 202]
    assert len(await commands_for(js, topology.TRAINING_COMMANDS.name,
                                  winner.json()["job_id"])) == 1
    assert len(await queued_events(js, "training", user_id)) == 1


async def test_a_slot_left_by_an_ended_training_is_taken(http, parts, js, settings):
    user_id, headers = user()
    dataset_id = await dataset_of(settings, user_id)
    ended = JobState(job_id=new_id(), user_id=user_id, kind=JobKind.TRAINING,
                     status=JobStatus.FAILED)
    await parts.jobs.create(ended)
    kv = await js.key_value(topology.MODELS_KV.bucket)
    await kv.put(active_training_key(user_id), ended.job_id.encode())  # its release was lost
    response = await http.post("/api/training/start", headers=headers,
                               json={"dataset_id": dataset_id})
    assert response.status_code == 202, response.text
    holder = await kv.get(active_training_key(user_id))
    assert holder.value.decode() == response.json()["job_id"]


# --- generation --------------------------------------------------------------------------


async def test_a_generation_retried_after_a_lost_ack_is_the_same_job_sent_once(
    http, parts, js, monkeypatch
):
    user_id, headers = user()
    headers |= {"Idempotency-Key": "gen-1"}
    body = {"prompt": "a lighthouse", "width": 256, "height": 256, "seed": 1}
    monkeypatch.setattr(parts.commands, "broker", Faulty(parts.commands.broker, "publish",
                                                  nats.errors.TimeoutError(), after=True))
    ahead = sum(((await js.stream_info(topology.GENERATION_COMMANDS.name,
                                       subjects_filter=topology.GENERATION_WORKERS.filter_subject)
                  ).state.subjects or {}).values())
    failed = await http.post("/api/generate/image", headers=headers, json=body)
    assert failed.status_code == 503 and "retry-after" in failed.headers
    retried = await http.post("/api/generate/image", headers=headers, json=body)
    assert retried.status_code == 202, retried.text
    again = await http.post("/api/generate/image", headers=headers, json=body)
    assert again.status_code == 202 and again.json()["job_id"] == retried.json()["job_id"]

    job_id = retried.json()["job_id"]
    assert len(await commands_for(js, topology.GENERATION_COMMANDS.name, job_id)) == 1
    [queued] = await queued_events(js, "generation", user_id)
    assert queued["job_id"] == job_id and queued["message_id"] == f"{job_id}-queued"
    assert queued["position"] >= ahead  # counted before the command was sent
    assert await parts.generation.slots.held(user_id) == [job_id]


async def test_a_generation_retried_after_it_ended_is_202_not_429(http, parts, settings):
    user_id, headers = user()
    body = {"prompt": "x", "width": 256, "height": 256}

    async def generate(key: str) -> httpx.Response:
        return await http.post("/api/generate/image", json=body,
                               headers=headers | {"Idempotency-Key": key})

    answers = [await generate(f"g{i}") for i in range(settings.max_generations_per_user)]
    assert all(a.status_code == 202 for a in answers)
    ended = answers[-1].json()["job_id"]
    await parts.jobs.update(user_id, ended, lambda s: s.model_copy(update={
        "status": JobStatus.SUCCEEDED, "progress": 1.0}))
    await parts.generation.slots.release(user_id, ended)
    assert (await generate("another")).status_code == 202  # the cap is full again
    retried = await generate(f"g{settings.max_generations_per_user - 1}")
    assert retried.status_code == 202, retried.text
    assert retried.json()["job_id"] == ended
    assert ended not in await parts.generation.slots.held(user_id)  # not claimed again


# --- jobs and readiness --------------------------------------------------------------------


async def test_a_jobs_internal_ending_is_not_shown(http, parts):
    user_id, headers = user()
    job = JobState(job_id=new_id(), user_id=user_id, kind=JobKind.GENERATION,
                   status=JobStatus.SUCCEEDED, progress=1.0, ending={"type": "x"})
    await parts.jobs.create(job)
    response = await http.get(f"/api/jobs/{job.job_id}", headers=headers)
    assert response.status_code == 200
    assert "ending" not in response.json() and response.json()["progress"] == 1.0


async def test_ready_answers_within_a_second_when_jetstream_hangs(http, parts, monkeypatch):
    async def hang(*_args, **_kwargs):
        await asyncio.sleep(3600)

    class Hanging:
        stream_info = key_value = staticmethod(hang)

    monkeypatch.setattr(parts.readiness, "js", Hanging())
    monkeypatch.setattr(parts.readiness, "running", {})
    # Answered before a hung check's own cap: the ready deadline (the reason says so).
    response = await asyncio.wait_for(http.get("/ready"), CHECK_CAP_S)
    assert response.status_code == 503
    assert "NATS did not answer within 0.8 s" in response.json()["reasons"]
    parts.readiness.stop()


@pytest.mark.slow
async def test_ready_follows_the_workers_heartbeats(http, js):
    def pulling() -> WorkLoad:
        return WorkLoad(pulling=True)

    beats = {domain: await Heartbeat.open(js, f"test-{domain}", (domain,), pulling)
             for domain in ("prompt", "training", "generation")}
    for beat in beats.values():
        await beat.beat()
    response = await http.get("/ready")
    assert response.status_code == 200, response.text
    assert all(response.json()["workers"][d] >= 1 for d in beats)

    # The generation worker stops writing; the others go on. Its record expires one TTL
    # after its last write; the server's expiry sweep may come later: three TTLs suffice.
    deadline = time.monotonic() + 3 * topology.WORKERS_KV.ttl_s
    while time.monotonic() < deadline:
        await beats["prompt"].beat()
        await beats["training"].beat()
        response = await http.get("/ready")
        if response.status_code == 503:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no live generation worker"]
    for beat in beats.values():
        await beat.withdraw()
