"""One trace from the HTTP request through NATS to auth_service and back, and from an
event's publisher to the WebSocket push."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from auth_service.config import AuthSettings
from auth_service.main import build_app
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.events import Delivered, continue_trace
from terra.runtime.telemetry import setup_tracing
from terra.settings import RuntimeSettings
from tests.conftest import provision_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(RuntimeSettings(), "terra-tests", exporter=exporter)
    yield exporter
    provider.shutdown()


def _flush() -> None:
    trace.get_tracer_provider().force_flush()


async def test_one_trace_from_http_through_nats_to_auth_service(
    spans, runtime_env, fresh_nats, monkeypatch
):
    # A server of its own: no auth_service of another test may answer in the queue group.
    await provision_all(fresh_nats)
    for key, value in fresh_nats.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TERRA_TRACE_EXPORTER", "console")  # tracing on (spans go to `spans`)
    auth_app = build_app(AuthSettings(), configure_process=False)
    gateway = create_app(GatewaySettings())
    await auth_app.start()
    try:
        async with gateway.router.lifespan_context(gateway):
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                spans.clear()
                response = await client.post(
                    "/api/auth/login", json={"email": "nobody@example.com", "password": "x" * 12}
                )
                assert response.status_code == 401
        # auth_service's processing span ends after its reply reached the gateway.
        async with asyncio.timeout(5):
            while True:
                _flush()
                if any("login.password" in span.name and "process" in span.name
                       for span in spans.get_finished_spans()):
                    break
                await asyncio.sleep(0.02)
    finally:
        await auth_app.stop()

    finished = spans.get_finished_spans()
    http_spans = [s for s in finished if s.name.startswith("POST /api/auth/login")]
    assert http_spans, [s.name for s in finished]
    trace_id = http_spans[0].context.trace_id
    in_trace = {s.name for s in finished if s.context.trace_id == trace_id}
    # The gateway's publish and auth_service's processing span share the HTTP trace.
    assert any("terra.rpc.auth.login.password" in name and "publish" in name for name in in_trace), in_trace
    assert any("terra.rpc.auth.login.password" in name and "process" in name for name in in_trace), in_trace


def test_the_websocket_push_continues_the_publishers_trace(spans):
    tracer = trace.get_tracer("publisher")
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("worker publishes") as publishing:
        propagate.inject(headers)
    event = Delivered(seq=7, subject="terra.evt.generation.started.u1", data=b"{}", headers=headers)
    with continue_trace(event) as push:
        pass
    assert push.get_span_context().trace_id == publishing.get_span_context().trace_id
    assert push.parent.span_id == publishing.get_span_context().span_id
