"""A dependency that cannot answer right now is a 503 with Retry-After, never a 500; `/ready`
answers within a second whatever hangs; a retried request may resend only while a
duplicate would be dropped. No servers: the routes meet fakes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import httpx
import nats.errors
import nats.js.errors
import pytest
from fastapi import FastAPI

from contracts import topology
from contracts.base import utcnow
from contracts.jobs import JobKind, JobState, JobStatus
from contracts.workers import WorkerHeartbeat
from gateway import readiness
from gateway.admission.training import trigger_word_for
from gateway.commands import deduplicated_if_sent_again
from gateway.config import GatewaySettings
from gateway.deps import readiness_of
from gateway.problems import install_problem_handlers
from gateway.readiness import CHECK_CAP_S, Readiness
from gateway.routers import health
from terra.errors import StorageError

FAULTS = [
    nats.errors.TimeoutError(),  # a KV get, stream or consumer info past its timeout
    TimeoutError(),  # asyncio's, from nats-py's fetch or a bounded wait
    nats.js.errors.NoStreamResponseError(),  # a publish or KV put with no stream leader
    nats.js.errors.ServiceUnavailableError(),  # `.code` None, as measured
    nats.js.errors.ServerError(code=500, description="insufficient resources"),
    nats.errors.NoRespondersError(),  # ack_sync during an election
    nats.errors.ConnectionClosedError(),
    nats.errors.ConnectionReconnectingError(),
    nats.errors.ConnectionDrainingError(),
    nats.errors.UnexpectedEOF(),
    nats.errors.OutboundBufferLimitError(),
    StorageError("object storage unreachable: connection refused"),
]


def _app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get(path)


@pytest.mark.parametrize("error", FAULTS, ids=lambda e: type(e).__name__)
async def test_a_dependency_fault_is_a_503_with_retry_after(error):
    response = await _get(_app_raising(error), "/boom")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["type"].endswith("/unavailable") and body["status"] == 503


async def test_a_bug_is_still_a_500():
    response = await _get(_app_raising(RuntimeError("a bug")), "/boom")
    assert response.status_code == 500
    assert response.json()["type"].endswith("/internal-error")


# --- retries --------------------------------------------------------------------------


def _job(**changes) -> JobState:
    return JobState(job_id="j1", user_id="u1", kind=JobKind.TRAINING).model_copy(update=changes)


def test_a_retry_resends_only_while_a_second_copy_would_be_dropped():
    stream = topology.TRAINING_COMMANDS  # a 600 s duplicate window
    assert deduplicated_if_sent_again(_job(), stream)
    old = utcnow() - timedelta(seconds=stream.duplicate_window_s)
    assert not deduplicated_if_sent_again(_job(created_at=old), stream)
    assert not deduplicated_if_sent_again(_job(status=JobStatus.RUNNING), stream)
    assert not deduplicated_if_sent_again(_job(started_at=utcnow()), stream)  # requeued
    assert not deduplicated_if_sent_again(_job(status=JobStatus.SUCCEEDED), stream)


def test_a_keyed_training_gets_the_same_trigger_word_on_every_retry():
    first = trigger_word_for("u1", "key-1")
    assert first == trigger_word_for("u1", "key-1")
    assert first != trigger_word_for("u1", "key-2") and first != trigger_word_for("u2", "key-1")
    assert len(first) == 5 and first.isalpha() and not set(first) & set("aeiouy")


# --- readiness ------------------------------------------------------------------------


async def _forever(*_args, **_kwargs):
    await asyncio.sleep(3600)


@dataclass
class _Hanging:
    """A JetStream context and object storage whose every call hangs, counting calls."""

    calls: int = 0

    async def stream_info(self, *_args, **_kwargs):
        self.calls += 1
        await _forever()

    async def key_value(self, *_args, **_kwargs):
        self.calls += 1
        await _forever()

    async def ping(self):
        self.calls += 1
        await _forever()


@dataclass
class _Answering:
    """A JetStream context where every stream exists, and storage that answers."""

    async def stream_info(self, name, **_kwargs):
        return SimpleNamespace(config=SimpleNamespace(name=name))

    async def ping(self):
        return None


def _readiness(settings: GatewaySettings, *, js: object, storage: object) -> Readiness:
    return Readiness(nc=SimpleNamespace(is_connected=True), js=js, storage=storage,
                     revocations=SimpleNamespace(caught_up=True),
                     hub=SimpleNamespace(sockets=3), required_workers=settings.ready_workers)


def _ready_app(checks: Readiness) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(health.router)
    app.dependency_overrides[readiness_of] = lambda: checks
    return app


async def test_ready_answers_within_a_second_when_nothing_answers():
    hanging = _Hanging()
    checks = _readiness(GatewaySettings(), js=hanging, storage=hanging)
    app = _ready_app(checks)
    for _ in range(3):
        # Answered before a hung check's own cap ends it: the ready deadline answered (the
        # reasons below say so), not the hang.
        response = await asyncio.wait_for(_get(app, "/ready"), CHECK_CAP_S)
        assert response.status_code == 503
        reasons = response.json()["reasons"]
        assert any(r.startswith("NATS did not answer") for r in reasons), reasons
        assert any(r.startswith("object storage did not answer") for r in reasons), reasons
        assert any(r.startswith("worker heartbeats did not answer") for r in reasons), reasons
    # A probe joins the checks still running from the one before: one call each, not three.
    assert hanging.calls == len(readiness.GATEWAY_STREAMS) + 2
    checks.stop()


def _heartbeat(domain: str, *, pulling: bool = True) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=f"w-{domain}", service=domain, domains=[domain],
                           host="h", pid=1, started_at=utcnow(), pulling=pulling)


async def test_ready_names_each_domain_without_a_live_worker(monkeypatch):
    beats = [_heartbeat("prompt"), _heartbeat("training"), _heartbeat("generation")]

    async def live_workers(_js):
        return beats

    monkeypatch.setattr(readiness, "live_workers", live_workers)
    app = _ready_app(_readiness(GatewaySettings(), js=_Answering(), storage=_Answering()))
    response = await _get(app, "/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "sockets": 3,
                               "workers": {"prompt": 1, "training": 1, "generation": 1}}

    beats[2] = _heartbeat("generation", pulling=False)  # alive, but a loop is down
    response = await _get(app, "/ready")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no live generation worker"]
    assert response.json()["workers"]["generation"] == 0


async def test_ready_without_required_workers_is_about_the_gateway_alone():
    answering = _Answering()  # streams and storage answer; the workers bucket is never read
    settings = GatewaySettings(ready_workers=[])
    response = await _get(_ready_app(_readiness(settings, js=answering,
                                                storage=answering)), "/ready")
    assert response.status_code == 200, response.text
    assert response.json()["workers"] == {}
