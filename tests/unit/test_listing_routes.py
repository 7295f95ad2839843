"""The `/api/me/*` listings over in-memory stores: the routes page, filter, refuse a bad or
borrowed cursor with a 422 naming `cursor`, and read the caller's items only. No servers:
the routes meet fakes (tests/e2e/test_listings.py runs the same over the real stack)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Header

from contracts.base import utcnow
from contracts.generation import BaseModelName, ImageRecord
from contracts.jobs import JobKind, JobState, JobStatus
from contracts.topology import OBJECTS
from contracts.training import DatasetImage, DatasetManifest, ModelRecord, ModelStatus
from gateway.deps import get_caller
from gateway.problems import install_problem_handlers
from gateway.routers import datasets, generation, jobs, models
from gateway.security import Caller
from terra.jobs.store import JobStore
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from tests.fakes import FakeKeyValue, FakeObjectStorage

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def caller_from_header(x_user: str = Header()) -> Caller:
    return Caller(user_id=x_user, email=None, token_id=None)


@pytest.fixture
def parts():
    return SimpleNamespace(
        jobs=JobStore({kind: FakeKeyValue(f"jobs-{kind.value}") for kind in JobKind}),
        images=ImageStore(FakeKeyValue("images")), models=ModelStore(FakeKeyValue("models")),
        storage=FakeObjectStorage())


@pytest.fixture
async def client(parts):
    app = FastAPI()
    install_problem_handlers(app)
    for router in (jobs.mine, models.mine, datasets.mine, generation.mine):
        app.include_router(router)
    app.dependency_overrides[get_caller] = caller_from_header
    app.state.parts = parts
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http


async def get(client, path: str, user: str = "alice", **params) -> httpx.Response:
    return await client.get(path, params=params, headers={"x-user": user})


async def every_page(client, path: str, limit: int, user: str = "alice", **params):
    items, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await get(client, path, user, **query)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items


def job(user: str, n: int, kind: JobKind, status: JobStatus) -> JobState:
    return JobState(job_id=f"j{n:03d}", user_id=user, kind=kind, status=status,
                    created_at=T0 + timedelta(seconds=n // 2))


async def test_jobs_page_through_every_kind_and_filter_by_status(client, parts):
    for n in range(15):
        await parts.jobs.create(job("alice", n, list(JobKind)[n % 3], list(JobStatus)[n % 5]))
    await parts.jobs.create(job("bob", 99, JobKind.PROMPT, JobStatus.RUNNING))

    listed = await every_page(client, "/api/me/jobs", 4)
    assert [j["job_id"] for j in listed] == [f"j{n:03d}" for n in reversed(range(15))]
    going = await every_page(client, "/api/me/jobs", 2, status=["queued", "running"])
    assert {j["status"] for j in going} == {"queued", "running"} and len(going) == 6
    prompts = await every_page(client, "/api/me/jobs", 2, kind="prompt", status="queued")
    assert [j["job_id"] for j in prompts] == ["j000"]  # the one queued prompt
    assert [j["job_id"] for j in await every_page(client, "/api/me/jobs", 5, "bob")] == [
        "j099"]


async def test_a_bad_or_borrowed_cursor_is_a_422_naming_cursor(client, parts):
    for n in range(3):
        await parts.jobs.create(job("alice", n, JobKind.PROMPT, JobStatus.QUEUED))
    cursor = (await get(client, "/api/me/jobs", limit=1)).json()["next_cursor"]
    for user, params in (("bob", {}), ("alice", {"kind": "prompt"}),
                         ("alice", {"cursor": "bm90IGpzb24"})):
        response = await get(client, "/api/me/jobs", user, **{"cursor": cursor, **params})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["field"] == "query.cursor" and error["location"] == "query"
        assert "j00" not in response.text
    for limit in (0, 101):
        assert (await get(client, "/api/me/jobs", limit=limit)).status_code == 422


async def test_images_models_and_sets_page_with_what_a_client_needs(client, parts):
    for n in range(3):
        await parts.images.create(ImageRecord(
            image_id=f"i{n}", user_id="alice", job_id="g1" if n else "g0",
            key=OBJECTS.image_key("alice", "g1", f"{n}.png"), width=256, height=256, seed=n,
            prompt="p", model=BaseModelName.SCHNELL, created_at=T0 + timedelta(seconds=n),
            expires_at=utcnow() + timedelta(days=1)))
        await parts.models.create(ModelRecord(
            model_id=f"m{n}", user_id="alice", trigger_word="sks", created_at=T0,
            status=ModelStatus.READY if n else ModelStatus.FAILED, dataset_id="d1",
            sample_image_keys=[OBJECTS.model_key("alice", f"m{n}", "samples/0.png")]))
        manifest = DatasetManifest(dataset_id=f"d{n}", user_id="alice",
                                   created_at=T0 + timedelta(seconds=n), images=[DatasetImage(
                                       image_id="p", key="k", filename="f", width=1, height=1)])
        await parts.storage.put_bytes(OBJECTS.upload_key("alice", f"d{n}", "manifest.json"),
                                      manifest.model_dump_json().encode())

    images = await every_page(client, "/api/me/images", 2)
    assert [i["image_id"] for i in images] == ["i2", "i1", "i0"]
    assert images[0]["download_url"].startswith("http://s3.invalid/terra/images/alice/")
    assert images[0]["url"] == "/api/images/i2" and images[0]["download_url_expires_at"]
    assert [i["image_id"] for i in await every_page(client, "/api/me/images", 5,
                                                    job_id="g1")] == ["i2", "i1"]
    ready = await every_page(client, "/api/me/models", 1, status="ready")
    assert [m["model_id"] for m in ready] == ["m2", "m1"]  # one instant: by id
    assert ready[0]["sample_urls"] and ready[0]["sample_urls_expire_at"]
    sets = await every_page(client, "/api/me/datasets", 2)
    assert [d["dataset_id"] for d in sets] == ["d2", "d1", "d0"]
    assert {m["model_id"] for m in sets[1]["models"]} == {"m0", "m1", "m2"}
    for path in ("/api/me/images", "/api/me/models", "/api/me/datasets"):
        assert (await get(client, path, "bob")).json() == {"items": [], "next_cursor": None}
