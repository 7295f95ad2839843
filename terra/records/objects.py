"""Object storage over the `minio` SDK (MinIO in production, any S3 locally).

The SDK is synchronous; every call runs in a worker thread so the event loop never
blocks. Keys follow `contracts.topology.OBJECTS`; callers check ownership before
handing out a key or a URL. Each service signs with its own key, allowed only what
`contracts.storage_access` grants it: so nothing here touches the bucket itself except
`ensure_buckets`, the operator's.
"""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from contracts.storage_access import probe_prefix
from contracts.topology import OBJECT_BUCKETS, OBJECTS
from terra.errors import ObjectMissing, StorageError
from terra.settings import RuntimeSettings

_MISSING = frozenset({"NoSuchKey", "NoSuchObject"})  # S3's codes for an object not there


class ObjectStorage:
    def __init__(self, client: Minio, bucket: str = OBJECTS.bucket,
                 presigner: Minio | None = None, probe: str | None = None) -> None:
        self._client = client
        self.bucket = bucket
        # Presigning is local computation; a client for the public address signs URLs
        # that clients outside the cluster can reach.
        self._presigner = presigner or client
        self._probe = probe or probe_prefix(None)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings,
                      identity: str | None = None) -> ObjectStorage:
        """Storage signed with `identity`'s key (`RuntimeSettings.s3_key`); None: the key
        in TERRA_S3_ACCESS_KEY, e.g. the operator's."""
        access_key, secret_key = settings.s3_key(identity)
        # Bounded connects and retries: an unreachable endpoint fails in seconds, not minutes.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.s3_connect_timeout_s, read=60.0),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                  status_forcelist=(500, 502, 503, 504)),
        )
        client = Minio(
            settings.s3_endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )
        presigner = None
        if settings.s3_public_endpoint:
            presigner = Minio(
                settings.s3_public_endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=settings.s3_public_secure,
                region=settings.s3_region,  # known: signing needs no request to the server
            )
        return cls(client, presigner=presigner, probe=probe_prefix(identity))

    async def _run(self, fn, *args, **kwargs):
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            missing = exc.code in _MISSING
            raise (ObjectMissing if missing else StorageError)(
                f"{exc.code}: {exc.message}") from exc
        except Exception as exc:  # urllib3 connection errors and the like
            raise StorageError(f"object storage unreachable: {exc}") from exc

    async def ensure_buckets(self, buckets: tuple[str, ...] = OBJECT_BUCKETS) -> list[str]:
        """Create missing buckets; returns those created. Idempotent."""
        created = []
        for bucket in buckets:
            if not await self._run(self._client.bucket_exists, bucket):
                try:
                    await self._run(self._client.make_bucket, bucket)
                except StorageError as exc:
                    # Another replica may have created it between the check and the call.
                    if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(
                        exc
                    ):
                        raise
                created.append(bucket)
        return created

    async def ping(self) -> None:
        """Raises StorageError unless the endpoint answers, accepts this key and has the
        bucket. A scoped key may not ask about the bucket itself (HEAD bucket needs the
        whole bucket), so it lists a prefix it may list where no object is (`probe`):
        an (empty) listing is healthy; no such bucket, a refusal or silence are not. (A
        missing key is no sure answer: S3 may refuse it to a key that cannot list.)"""
        await self.list_keys(self._probe)

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        await self._run(
            self._client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=metadata,
        )

    async def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._run(read)

    async def exists(self, key: str) -> bool:
        try:
            await self._run(self._client.stat_object, self.bucket, key)
        except ObjectMissing:
            return False
        return True

    async def list_keys(self, prefix: str) -> list[str]:
        def collect() -> list[str]:
            objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return [obj.object_name for obj in objects]

        return await self._run(collect)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many were deleted."""
        if not prefix.endswith("/"):
            raise ValueError("a prefix to delete must end in '/' (never a partial user id)")
        keys = await self.list_keys(prefix)

        def remove() -> list[str]:
            errors = self._client.remove_objects(self.bucket, [DeleteObject(k) for k in keys])
            return [f"{err.name}: {err.message}" for err in errors]  # lazy: iterating sends it

        if keys:
            failed = await self._run(remove)
            if failed:
                raise StorageError(f"could not delete {len(failed)} objects: {failed[:3]}")
        return len(keys)

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing one is not an error (S3 semantics)."""
        await self._run(self._client.remove_object, self.bucket, key)

    async def presigned_get(self, key: str, expires: timedelta = timedelta(minutes=15)) -> str:
        return await self._run(self._presigner.presigned_get_object, self.bucket, key, expires)
