"""The gateway's HTTP contract: health, readiness, problem+json, limits, CORS, jobs."""

from __future__ import annotations

import httpx
import pytest

from contracts.ids import new_id
from contracts.jobs import JobKind, JobState, JobStatus
from contracts.topology import GENERATION_JOBS_KV, job_key
from terra.ops.servers import free_port
from tests.e2e.client import register

pytestmark = pytest.mark.e2e



async def test_health_and_readiness(http):
    assert (await http.get("/health")).json() == {"status": "ok"}
    ready = await http.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_readiness_names_what_is_missing(stack):
    url = stack.start_gateway(wait_for="/health", TERRA_S3_ENDPOINT=f"127.0.0.1:{free_port()}")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert any("object storage" in reason for reason in response.json()["reasons"])


async def test_readiness_names_each_domain_without_a_live_worker(stack):
    url = stack.start_gateway(wait_for="/health", TERRA_READY_WORKERS='["nobody"]')
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no live nobody worker"]
    assert response.json()["workers"]["nobody"] == 0


async def test_openapi_docs_are_served(http):
    assert (await http.get("/docs")).status_code == 200
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/api/auth/register", "/api/auth/login", "/api/me", "/api/jobs/{job_id}"} <= set(paths)


async def test_unknown_route_is_a_problem(http):
    response = await http.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/not-found")


async def test_validation_errors_name_each_invalid_field(http):
    response = await http.post("/api/auth/register", json={"email": "not-an-email",
                                                           "password": 12, "extra": 1})
    assert response.status_code == 422
    body = response.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(body)
    assert {e["field"] for e in body["errors"]} == {"email", "password", "extra"}


async def test_malformed_json_is_a_problem(http):
    response = await http.post("/api/auth/login", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_oversized_bodies_are_refused(http):
    declared = await http.post("/api/auth/login", content=b"x" * (1024 * 1024 + 1),
                               headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"

    async def chunks():  # no Content-Length: the limit counts streamed bytes
        for _ in range(20):
            yield b" " * 65536

    streamed = await http.post("/api/auth/login", content=chunks(),
                               headers={"content-type": "application/json"})
    assert streamed.status_code == 413


async def test_cors_is_configurable(stack):
    url = stack.start_gateway(TERRA_CORS_ORIGINS='["https://app.example"]')
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        allowed = await client.options("/api/me", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
        other = await client.options("/api/me", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_a_job_is_visible_to_its_owner_only(http, nc):
    alice, bob = await register(http), await register(http)
    job = JobState(job_id=new_id(), user_id=alice.user_id, kind=JobKind.GENERATION,
                   status=JobStatus.RUNNING, progress=0.5)
    kv = await nc.jetstream().key_value(GENERATION_JOBS_KV.bucket)
    await kv.put(job_key(alice.user_id, job.job_id), job.model_dump_json().encode())

    mine = await http.get(f"/api/jobs/{job.job_id}", headers=alice.headers)
    assert mine.status_code == 200
    assert JobState.model_validate(mine.json()) == job
    assert "ending" not in mine.json()  # the lifecycle's copy of the ending: internal

    theirs = await http.get(f"/api/jobs/{job.job_id}", headers=bob.headers)
    missing = await http.get(f"/api/jobs/{new_id()}", headers=bob.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].split()[0] == missing.json()["detail"].split()[0]
    assert (await http.get(f"/api/jobs/{job.job_id}")).status_code == 401


async def test_the_request_id_is_echoed_or_made_up(http):
    given = await http.get("/health", headers={"X-Request-ID": "client-req-42"})
    assert given.headers["x-request-id"] == "client-req-42"
    made = await http.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] not in ("", "bad id with spaces")
