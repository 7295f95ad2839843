"""Each service's S3 key on a real `weed mini`: every verb on every folder of the layout
(and on names that only look like one) works exactly where `contracts.storage_access`
grants it and is refused (`AccessDenied`) everywhere else; no key but the operator's may
create or delete a bucket, or reach another bucket.

SeaweedFS has no separate delete right (`Write` also deletes), so a key granted delete
there may write too: `terra.ops.storage_policies.weed_verbs` says what each grant comes to.
"""

from __future__ import annotations

import io

import httpx
import pytest
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from contracts.ids import new_id
from contracts.storage_access import STORAGE_IDENTITIES, Verb, grants, matches
from contracts.topology import GATEWAY, GENERATOR, OBJECTS, TRAINER
from terra.errors import StorageError
from terra.ops.storage_policies import weed_verbs
from terra.records.objects import ObjectStorage
from terra.settings import RuntimeSettings

pytestmark = pytest.mark.integration
BUCKET = OBJECTS.bucket


@pytest.fixture(scope="module")
def weed(s3):
    if s3.credentials is None:
        pytest.skip("MinIO (Docker) runs with the root key for every process: its "
                    "policies (deploy/minio/) are not applied in tests")
    return s3


@pytest.fixture(scope="module")
def objects(weed) -> dict[str, str]:
    """One object in every folder, and in folders whose names only start like one."""
    user, record = new_id(), new_id()
    keys = {
        "upload": OBJECTS.upload_key(user, record, "a.jpg"),
        "lora": OBJECTS.model_key(user, record, "lora.safetensors"),
        "sample": OBJECTS.model_key(user, record, "samples/0.png"),
        "image": OBJECTS.image_key(user, record, "0.png"),
        "images2": f"images2/{user}/{record}/0.png",   # `images*` would match this
        "uploadsx": f"uploadsX/{user}/{record}/a.jpg",
        "top": f"top-{record}.txt",
    }
    root = weed.client()
    for key in keys.values():
        root.put_object(BUCKET, key, io.BytesIO(b"data"), 4)
    return keys


def can(identity: str, verb: Verb, key: str) -> bool:
    """What the table grants, as SeaweedFS enforces it."""
    return any(verb in weed_verbs(grant.verbs) and matches(grant.pattern, key)
               for grant in grants(identity))


def attempt(action) -> str:
    try:
        action()
    except S3Error as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("identity", STORAGE_IDENTITIES)
def test_each_key_may_do_exactly_its_grants(weed, objects, identity):
    client, root = weed.client(identity), weed.client()
    wrong = []

    def check(verb: Verb, target: str, action) -> None:
        outcome = attempt(action)
        expected = "ok" if can(identity, verb, target) else "AccessDenied"
        if outcome != expected:
            wrong.append(f"{verb} {target!r}: {outcome}, expected {expected}")

    for key in objects.values():
        check(Verb.READ, key, lambda key=key: client.get_object(BUCKET, key).read())
        probe = f"{key}.{identity}"
        check(Verb.WRITE, probe, lambda probe=probe: client.put_object(
            BUCKET, probe, io.BytesIO(b"new"), 3))
        doomed = f"{key}.doomed"
        root.put_object(BUCKET, doomed, io.BytesIO(b"old"), 3)
        check(Verb.DELETE, doomed, lambda doomed=doomed: client.remove_object(BUCKET, doomed))
        if can(identity, Verb.DELETE, doomed):  # really gone, not just answered
            assert attempt(lambda doomed=doomed: root.stat_object(BUCKET, doomed)) != "ok"

    user_folder = objects["upload"].rsplit("/", 2)[0] + "/"
    for prefix in ("uploads/", user_folder, "models/", "images/", "images2/",
                   "uploads", "images", ""):
        check(Verb.LIST, prefix, lambda prefix=prefix: list(
            client.list_objects(BUCKET, prefix=prefix, recursive=True)))
    assert not wrong, f"{identity}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("identity", STORAGE_IDENTITIES)
def test_no_service_key_touches_buckets(weed, identity):
    client = weed.client(identity)
    assert attempt(lambda: client.make_bucket(f"made-by-{new_id()[:12]}")) == "AccessDenied"
    assert attempt(lambda: client.remove_bucket(BUCKET)) == "AccessDenied"
    # Asking about the bucket needs the whole bucket: what ObjectStorage.ping avoids.
    assert attempt(lambda: client.bucket_exists(BUCKET)) == "AccessDenied"
    assert weed.client().bucket_exists(BUCKET)


def test_a_grant_covers_its_bucket_only(weed):
    other = f"other-{new_id()[:12]}"
    root = weed.client()
    root.make_bucket(other)
    root.put_object(other, "uploads/u/d/a.jpg", io.BytesIO(b"data"), 4)
    gateway = weed.client(GATEWAY)
    assert attempt(lambda: gateway.get_object(other, "uploads/u/d/a.jpg").read()) == "AccessDenied"
    assert attempt(lambda: gateway.put_object(
        other, "uploads/u/d/b.jpg", io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert attempt(lambda: list(gateway.list_objects(other, prefix="uploads/"))) == "AccessDenied"


def test_a_multi_delete_removes_only_what_the_key_may_delete(weed, objects):
    user = new_id()
    mine, theirs = f"images/{user}/j/0.png", f"uploads/{user}/d/a.jpg"
    root = weed.client()
    for key in (mine, theirs):
        root.put_object(BUCKET, key, io.BytesIO(b"data"), 4)
    errors = list(weed.client(GENERATOR).remove_objects(
        BUCKET, [DeleteObject(mine), DeleteObject(theirs)]))
    assert [(error.name, error.code) for error in errors] == [(theirs, "AccessDenied")]
    assert attempt(lambda: root.stat_object(BUCKET, mine)) != "ok"
    assert attempt(lambda: root.stat_object(BUCKET, theirs)) == "ok"


async def test_every_service_pings_with_its_own_key_and_a_missing_bucket_is_an_error(weed):
    settings = RuntimeSettings(s3_endpoint=weed.endpoint,
                               s3_credentials_dir=weed.credentials.directory)
    for identity in STORAGE_IDENTITIES:
        await ObjectStorage.from_settings(settings, identity).ping()
        with pytest.raises(StorageError):
            await ObjectStorage(weed.client(identity), bucket=f"gone-{new_id()[:12]}").ping()
    with pytest.raises(StorageError, match="NoSuchBucket"):
        await ObjectStorage(weed.client(), bucket=f"gone-{new_id()[:12]}").ping()


async def test_a_service_helper_deleting_outside_its_grants_fails_loudly(weed, objects):
    trainer = ObjectStorage(weed.client(TRAINER))
    image_folder = objects["image"].rsplit("/", 2)[0] + "/"
    with pytest.raises(StorageError, match="AccessDenied"):
        await trainer.delete_prefix(image_folder)
    assert await ObjectStorage(weed.client()).exists(objects["image"])


async def test_the_gateways_presigned_urls_open_images_and_samples_but_no_lora(weed, objects):
    gateway = ObjectStorage(weed.client(GATEWAY))
    async with httpx.AsyncClient() as http:
        for name, status in (("image", 200), ("sample", 200), ("lora", 403), ("upload", 200)):
            response = await http.get(await gateway.presigned_get(objects[name]))
            assert response.status_code == status, (name, response.text)
