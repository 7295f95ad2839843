"""The caller's paged listings over the running gateway (`GET /api/me/images`, `/models`,
`/datasets`, `/jobs`): newest first a page at a time, filters, limits, cursors that are
refused when damaged or someone else's, paging that neither repeats nor misses while items
arrive, nobody else's items ever, and the older all-at-once listings answering as before.

Records are written as their owners would write them (the operator's connection and S3
key), so each test controls times and ties; one photo set is a real upload."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from contracts.base import utcnow
from contracts.generation import BaseModelName, ImageRecord
from contracts.ids import new_id
from contracts.jobs import FailureCode, JobError, JobKind, JobState, JobStatus
from contracts.topology import OBJECTS
from contracts.training import DatasetImage, DatasetManifest, ModelRecord, ModelStatus
from terra.jobs.store import JobStore
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from terra.records.objects import ObjectStorage
from tests.e2e.client import register
from tests.e2e.test_training import photo_files, upload

pytestmark = [pytest.mark.e2e]

LISTINGS = ("/api/me/images", "/api/me/models", "/api/me/datasets", "/api/me/jobs")
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def storage(s3) -> ObjectStorage:
    """The operator's: the test writes what the services would have."""
    return ObjectStorage(s3.client())


@pytest.fixture
async def stores(nc):
    js = nc.jetstream()
    return (await JobStore.open(js), await ImageStore.open(js), await ModelStore.open(js))


async def pages(http, account, path: str, limit: int, **params) -> list[dict]:
    """Every page of a listing in turn, following `next_cursor`: the pages' items."""
    items, cursor = [], None
    for _ in range(200):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=query, headers=account.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], "a page with a next cursor shows something"
    raise AssertionError("the cursors never ended")


def image(user_id: str, seconds: float, *, job_id: str | None = None, key: str | None = None,
          expires_in: timedelta = timedelta(days=1), image_id: str | None = None) -> ImageRecord:
    image_id = image_id or new_id()
    job_id = job_id or new_id()
    return ImageRecord(
        image_id=image_id, user_id=user_id, job_id=job_id,
        key=key or OBJECTS.image_key(user_id, job_id, "0.png"), width=256, height=256,
        seed=7, prompt="a lighthouse at dusk", model=BaseModelName.SCHNELL,
        created_at=T0 + timedelta(seconds=seconds), expires_at=utcnow() + expires_in)


def job(user_id: str, seconds: float, kind: JobKind, status: JobStatus,
        job_id: str | None = None) -> JobState:
    created = T0 + timedelta(seconds=seconds)
    return JobState(
        job_id=job_id or new_id(), user_id=user_id, kind=kind, status=status,
        progress=1.0 if status is JobStatus.SUCCEEDED else 0.25,
        error=JobError(code=FailureCode.OUT_OF_MEMORY, reason="too big")
        if status is JobStatus.FAILED else None,
        created_at=created, updated_at=created)


def newest_first(records, id_field: str) -> list[str]:
    return [getattr(r, id_field) for r in sorted(
        records, key=lambda r: (r.created_at, getattr(r, id_field)), reverse=True)]


async def test_every_listing_needs_a_token(http):
    for path in LISTINGS:
        response = await http.get(path)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_jobs_are_paged_newest_first_and_filtered_by_kind_and_status(http, stores):
    jobs, _, _ = stores
    alice, bob = await register(http), await register(http)
    kinds, statuses = list(JobKind), list(JobStatus)
    made = [job(alice.user_id, i // 3, kinds[i % 3], statuses[i % 5]) for i in range(26)]
    bobs = [job(bob.user_id, i, JobKind.GENERATION, JobStatus.RUNNING) for i in range(3)]
    for state in made + bobs:
        assert await jobs.create(state)

    listed = await pages(http, alice, "/api/me/jobs", 7)
    assert [j["job_id"] for j in listed] == newest_first(made, "job_id")  # ties: by id
    first = listed[0]
    assert set(first) == {"job_id", "kind", "status", "progress", "detail", "result", "error",
                          "cancel_requested", "created_at", "started_at", "updated_at"}
    failed = next(j for j in listed if j["status"] == "failed")
    assert failed["error"] == {"code": "out_of_memory", "reason": "too big"}

    # What a reopened app asks: what is still going?
    going = await pages(http, alice, "/api/me/jobs", 4,
                        status=["queued", "running"])
    assert [j["job_id"] for j in going] == newest_first(
        [s for s in made if s.status in (JobStatus.QUEUED, JobStatus.RUNNING)], "job_id")
    generations = await pages(http, alice, "/api/me/jobs", 5, kind="generation")
    assert [j["job_id"] for j in generations] == newest_first(
        [s for s in made if s.kind is JobKind.GENERATION], "job_id")
    both = await pages(http, alice, "/api/me/jobs", 3, kind=["training", "prompt"],
                       status="succeeded")
    assert [j["job_id"] for j in both] == newest_first(
        [s for s in made if s.kind is not JobKind.GENERATION
         and s.status is JobStatus.SUCCEEDED], "job_id")
    # The default page size is 20; bob sees his own only.
    default = await http.get("/api/me/jobs", headers=alice.headers)
    assert len(default.json()["items"]) == 20 and default.json()["next_cursor"]
    assert {j["job_id"] for j in await pages(http, bob, "/api/me/jobs", 100)} == {
        s.job_id for s in bobs}
    # One job by id still answers as before.
    one = await http.get(f"/api/jobs/{made[0].job_id}", headers=alice.headers)
    assert one.status_code == 200 and one.json()["type"] == "job.state.v1"


async def test_invalid_cursors_limits_and_filters_are_422_problems_naming_the_field(http):
    alice = await register(http)
    bad = {"cursor": ["not a cursor", "bm90IGpzb24", "eyJ2IjoxfQ", "A" * 300],
           "limit": ["0", "101", "x"], "status": ["sleeping"], "kind": ["dreaming"]}
    for field, values in bad.items():
        for value in values:
            response = await http.get("/api/me/jobs", params={field: value},
                                      headers=alice.headers)
            assert response.status_code == 422, (field, value, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["type"].endswith("/validation-error")
            assert [field in e["field"].split(".") for e in problem["errors"]] == [True]
    for path in LISTINGS:
        response = await http.get(path, params={"cursor": "bm90IGpzb24"},
                                  headers=alice.headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["field"].endswith("cursor")


async def test_a_cursor_made_for_another_listing_or_filter_is_refused(http, stores):
    jobs, _, _ = stores
    alice = await register(http)
    for i in range(3):
        await jobs.create(job(alice.user_id, i, JobKind.PROMPT, JobStatus.QUEUED))
    first = (await http.get("/api/me/jobs", params={"limit": 1},
                            headers=alice.headers)).json()
    for path, params in (("/api/me/jobs", {"status": "queued"}),
                         ("/api/me/jobs", {"kind": "prompt"}), ("/api/me/images", {})):
        response = await http.get(path, params={**params, "cursor": first["next_cursor"]},
                                  headers=alice.headers)
        assert response.status_code == 422, (path, params, response.text)
        assert "cursor" in response.json()["errors"][0]["field"]


async def test_another_users_cursor_never_shows_their_items(http, stores, storage):
    jobs, images, models = stores
    alice, bob = await register(http), await register(http)
    alices = {"/api/me/jobs": [], "/api/me/images": [], "/api/me/models": [],
              "/api/me/datasets": []}
    for i in range(4):
        state = job(alice.user_id, i, JobKind.GENERATION, JobStatus.RUNNING)
        record = image(alice.user_id, i)
        model = ModelRecord(model_id=new_id(), user_id=alice.user_id, trigger_word="sks",
                            created_at=T0 + timedelta(seconds=i))
        await jobs.create(state)
        await images.create(record)
        await models.create(model)
        dataset = await put_manifest(storage, alice.user_id, i)
        alices["/api/me/jobs"].append(state.job_id)
        alices["/api/me/images"].append(record.image_id)
        alices["/api/me/models"].append(model.model_id)
        alices["/api/me/datasets"].append(dataset)
    await jobs.create(job(bob.user_id, 1, JobKind.GENERATION, JobStatus.RUNNING))
    await images.create(image(bob.user_id, 1))
    id_field = {"/api/me/jobs": "job_id", "/api/me/images": "image_id",
                "/api/me/models": "model_id", "/api/me/datasets": "dataset_id"}

    for path, ids in alices.items():
        page = (await http.get(path, params={"limit": 2}, headers=alice.headers)).json()
        assert [item[id_field[path]] for item in page["items"]] == ids[::-1][:2]
        stolen = await http.get(path, params={"limit": 2, "cursor": page["next_cursor"]},
                                headers=bob.headers)
        assert stolen.status_code == 422, (path, stolen.text)
        assert "cursor" in stolen.json()["errors"][0]["field"]
        assert not any(i in stolen.text for i in ids)  # none of alice's ids, anywhere
        # And bob's own listing holds none of alice's items.
        own = await pages(http, bob, path, 100)
        assert not {item[id_field[path]] for item in own} & set(ids)


async def test_paging_while_items_arrive_neither_repeats_nor_misses_one(http, stores):
    _, images, _ = stores
    alice = await register(http)
    there = [image(alice.user_id, i // 2) for i in range(9)]  # pairs made in one instant
    for record in there:
        await images.create(record)

    seen, cursor = [], None
    while True:
        response = await http.get("/api/me/images", headers=alice.headers,
                                  params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        page = response.json()
        seen += [item["image_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # Between two pages: a newer image, and one made in the same instant as the
        # newest (an id tie).
        await images.create(image(alice.user_id, 3600 + len(seen)))
        await images.create(image(alice.user_id, 4, image_id="zz" + new_id()[:8]))
    assert seen == newest_first(there, "image_id")  # each once, none missed, no newcomer


async def test_images_page_with_urls_that_work_and_the_old_listing_answers_as_before(
        http, stores, storage):
    _, images, _ = stores
    alice = await register(http)
    job_id = new_id()
    kept = [image(alice.user_id, i, job_id=job_id if i < 2 else None) for i in range(5)]
    for record in kept:
        await images.create(record)
        await storage.put_bytes(record.key, b"png of " + record.image_id.encode(), "image/png")
    await images.create(image(alice.user_id, 9, expires_in=timedelta(seconds=-1)))  # expired
    bob = await register(http)
    await images.create(image(alice.user_id, 8,  # a damaged record: another user's key
                              key=OBJECTS.image_key(bob.user_id, new_id(), "0.png")))

    listed = await pages(http, alice, "/api/me/images", 2)
    assert [i["image_id"] for i in listed] == newest_first(kept, "image_id")
    newest = listed[0]
    assert set(newest) == {"image_id", "job_id", "width", "height", "seed", "prompt", "model",
                           "lora_id", "created_at", "expires_at", "url", "download_url",
                           "download_url_expires_at"}
    assert newest["url"] == f"/api/images/{newest['image_id']}"
    lasts = datetime.fromisoformat(newest["download_url_expires_at"]) - utcnow()
    assert timedelta(minutes=14) < lasts <= timedelta(minutes=15)
    async with httpx.AsyncClient() as client:
        fetched = await client.get(newest["download_url"])  # no token: presigned
    assert fetched.content == b"png of " + newest["image_id"].encode()
    served = await http.get(newest["url"], headers=alice.headers)
    assert served.status_code == 200

    of_job = await pages(http, alice, "/api/me/images", 20, job_id=job_id)
    assert [i["image_id"] for i in of_job] == newest_first(kept[:2], "image_id")

    old = await http.get(f"/api/generate/download/{alice.user_id}", headers=alice.headers)
    assert old.status_code == 200 and isinstance(old.json(), list)
    assert [i["image_id"] for i in old.json()] == newest_first(kept, "image_id")
    assert set(old.json()[0]) == {"image_id", "job_id", "width", "height", "seed", "prompt",
                                  "model", "created_at", "expires_at", "url", "download_url"}
    other = await http.get(f"/api/generate/download/{bob.user_id}", headers=alice.headers)
    assert other.status_code == 404


async def test_models_page_filtered_by_status_and_the_old_listing_answers_as_before(
        http, stores, storage):
    _, _, models = stores
    alice = await register(http)
    made = []
    for i, status in enumerate([ModelStatus.READY, ModelStatus.TRAINING, ModelStatus.READY,
                                ModelStatus.FAILED, ModelStatus.READY]):
        model_id = new_id()
        sample = OBJECTS.model_key(alice.user_id, model_id, "samples/0.png")
        ready = status is ModelStatus.READY
        if ready:
            await storage.put_bytes(sample, b"sample of " + model_id.encode(), "image/png")
        record = ModelRecord(model_id=model_id, user_id=alice.user_id, trigger_word=f"sks{i}",
                             status=status, rank=4, steps=10, job_id=new_id(),
                             dataset_id=new_id(), sample_image_keys=[sample] if ready else [],
                             created_at=T0 + timedelta(seconds=i))
        await models.create(record)
        made.append(record)

    listed = await pages(http, alice, "/api/me/models", 2)
    assert [m["model_id"] for m in listed] == newest_first(made, "model_id")
    assert set(listed[0]) == {"model_id", "status", "trigger_word", "base_model", "rank",
                              "steps", "job_id", "dataset_id", "created_at", "sample_urls",
                              "sample_urls_expire_at"}
    ready = await pages(http, alice, "/api/me/models", 2, status="ready")
    assert [m["model_id"] for m in ready] == newest_first(
        [m for m in made if m.status is ModelStatus.READY], "model_id")
    assert ready[0]["trigger_word"] == "sks4" and ready[0]["sample_urls_expire_at"]
    async with httpx.AsyncClient() as client:
        sample = await client.get(ready[0]["sample_urls"][0])
    assert sample.content == b"sample of " + ready[0]["model_id"].encode()
    training = next(m for m in listed if m["status"] == "training")
    assert training["sample_urls"] == [] and training["sample_urls_expire_at"] is None
    several = await pages(http, alice, "/api/me/models", 10, status=["training", "failed"])
    assert {m["status"] for m in several} == {"training", "failed"} and len(several) == 2

    old = await http.get("/api/models", headers=alice.headers)
    assert old.status_code == 200 and isinstance(old.json(), list)
    assert [m["model_id"] for m in old.json()] == newest_first(made, "model_id")
    assert set(old.json()[0]) == {"model_id", "status", "trigger_word", "base_model", "rank",
                                  "steps", "job_id", "created_at", "sample_urls"}


async def put_manifest(storage: ObjectStorage, user_id: str, seconds: float) -> str:
    """A photo set as an upload leaves it (only its manifest: what listings read)."""
    dataset_id = new_id()
    manifest = DatasetManifest(
        dataset_id=dataset_id, user_id=user_id, created_at=T0 + timedelta(seconds=seconds),
        images=[DatasetImage(image_id=new_id(),
                             key=OBJECTS.upload_key(user_id, dataset_id, "a.jpg"),
                             filename="me.jpg", width=512, height=512)] * 10)
    await storage.put_bytes(OBJECTS.upload_key(user_id, dataset_id, "manifest.json"),
                            manifest.model_dump_json().encode(), "application/json")
    return dataset_id


async def test_photo_sets_page_from_storage_and_the_old_listing_answers_as_before(
        http, stores, storage):
    _, _, models = stores
    alice, bob = await register(http), await register(http)
    uploaded = await upload(http, alice, photo_files(10, first_seed=4200))
    assert uploaded.status_code == 201, uploaded.text
    real = uploaded.json()["dataset_id"]  # made now: the newest
    older = [await put_manifest(storage, alice.user_id, i) for i in range(4)]
    model = ModelRecord(model_id=new_id(), user_id=alice.user_id, trigger_word="sks",
                        dataset_id=older[1], status=ModelStatus.READY)
    await models.create(model)
    await put_manifest(storage, bob.user_id, 10)

    listed = await pages(http, alice, "/api/me/datasets", 2)
    assert [d["dataset_id"] for d in listed] == [real, *older[::-1]]
    assert set(listed[0]) == {"dataset_id", "created_at", "image_count", "models"}
    assert listed[0]["image_count"] == 10
    by_id = {d["dataset_id"]: d for d in listed}
    assert by_id[older[1]]["models"] == [{"model_id": model.model_id, "status": "ready"}]

    old = await http.get("/api/training/datasets", headers=alice.headers)
    assert old.status_code == 200 and isinstance(old.json(), list)
    assert [d["dataset_id"] for d in old.json()] == [real, *older[::-1]]
    assert set(old.json()[0]) == {"dataset_id", "created_at", "image_count", "models"}
    assert json.loads(old.text)[0]["created_at"] == listed[0]["created_at"].replace(
        "Z", "+00:00")
    bobs = await pages(http, bob, "/api/me/datasets", 5)
    assert len(bobs) == 1 and bobs[0]["dataset_id"] not in {real, *older}
