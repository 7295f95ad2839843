"""The object storage adapter against a real S3 server."""

from __future__ import annotations

import httpx
import pytest
from minio import Minio

from contracts.ids import new_id
from terra.errors import StorageError
from terra.records.objects import ObjectStorage

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(s3) -> ObjectStorage:
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    return ObjectStorage(client)


async def test_bucket_provisioning_is_idempotent(storage):
    await storage.ensure_buckets()
    assert await storage.ensure_buckets() == []
    await storage.ping()


async def test_put_get_list_and_delete_a_user_prefix(storage):
    await storage.ensure_buckets()
    alice, bob = new_id(), new_id()
    await storage.put_bytes(f"images/{alice}/j1/a.png", b"alice-1", "image/png")
    await storage.put_bytes(f"images/{alice}/j2/b.png", b"alice-2", "image/png")
    await storage.put_bytes(f"images/{bob}/j3/c.png", b"bob", "image/png")

    assert await storage.get_bytes(f"images/{alice}/j1/a.png") == b"alice-1"
    assert sorted(await storage.list_keys(f"images/{alice}/")) == [
        f"images/{alice}/j1/a.png",
        f"images/{alice}/j2/b.png",
    ]
    assert await storage.delete_prefix(f"images/{alice}/") == 2
    assert not await storage.exists(f"images/{alice}/j1/a.png")
    assert await storage.exists(f"images/{bob}/j3/c.png")


async def test_a_prefix_without_trailing_slash_is_refused(storage):
    with pytest.raises(ValueError):
        await storage.delete_prefix("images/u1")  # would also match images/u10/...


async def test_presigned_urls_download_and_expire_in_the_signature(storage):
    await storage.ensure_buckets()
    key = f"images/{new_id()}/j/x.png"
    await storage.put_bytes(key, b"png-bytes", "image/png")
    url = await storage.presigned_get(key)
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        assert response.status_code == 200 and response.content == b"png-bytes"
        tampered = await client.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
        assert tampered.status_code == 403


async def test_wrong_credentials_are_an_error(s3):
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key="wrong", secure=False)
    with pytest.raises(StorageError):
        await ObjectStorage(client).ping()


async def test_presigned_urls_can_name_a_public_address(s3):
    from terra.settings import RuntimeSettings

    settings = RuntimeSettings(s3_endpoint=s3.endpoint, s3_access_key=s3.access_key,
                               s3_secret_key=s3.secret_key,
                               s3_public_endpoint="images.example.com")
    storage = ObjectStorage.from_settings(settings)
    url = await storage.presigned_get("images/u/j/x.png")
    assert url.startswith("https://images.example.com/terra/images/u/j/x.png?")
