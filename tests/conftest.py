"""Shared fixtures: real NATS and S3 servers started once per session, and settings
pointing at them. Tests isolate themselves with fresh ids, not fresh servers.

The session's NATS is provisioned once by the operator (as `terra provision` does), so
the services started by tests, each with its own credential, find what they open.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from contracts import topology
from terra.nats.provisioning import provision
from tests.infra import NatsEndpoint, S3Endpoint, nats_server, s3_server

# Tests never read a developer's environment by accident.
for key in [k for k in os.environ if k.startswith("TERRA_")]:
    del os.environ[key]
# Every test process and service runs on the local profile, chosen explicitly (auth_service
# refuses the published development signing key otherwise).
os.environ["TERRA_PROFILE"] = "local"


async def provision_all(endpoint: NatsEndpoint) -> None:
    nc = await endpoint.connect()
    try:
        await provision(nc, consumers=topology.CONSUMERS)
    finally:
        await nc.drain()


@pytest.fixture(scope="session")
def nats_endpoint(tmp_path_factory) -> NatsEndpoint:
    with nats_server(tmp_path_factory.mktemp("nats")) as endpoint:
        asyncio.run(provision_all(endpoint))
        yield endpoint


@pytest.fixture(scope="session")
def nats_url(nats_endpoint) -> str:
    return nats_endpoint.url


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> S3Endpoint:
    """The session's S3, its bucket made with the root key (as `terra provision` does);
    `s3.client(identity)` signs as a service, `s3.client()` as the operator."""
    from terra.records.objects import ObjectStorage

    with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        asyncio.run(ObjectStorage(endpoint.client()).ensure_buckets())
        yield endpoint


@pytest.fixture
def fresh_nats(tmp_path) -> NatsEndpoint:
    """A server of its own, for tests about what exists on a server (provisioning)."""
    with nats_server(tmp_path / "nats") as endpoint:
        yield endpoint


@pytest.fixture
async def nc(nats_endpoint):
    """The operator's connection (tests set up and inspect state as the operator would)."""
    connection = await nats_endpoint.connect()
    yield connection
    await connection.drain()


@pytest.fixture
def runtime_env(nats_endpoint, s3, monkeypatch) -> dict[str, str]:
    """Environment variables that point any Terra settings class at the test servers; a
    process built from them signs in as its own identity, to NATS and to S3."""
    env = {
        **nats_endpoint.env(),
        **s3.env(),
        "TERRA_LOG_FORMAT": "text",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def google_keys():
    from tests.google_idp import GoogleKeys

    keys = GoogleKeys().serve()
    yield keys
    keys.close()


@pytest.fixture(scope="module")
def google():
    """A fake Google sign-in for one module (its keys served over HTTP; it signs tokens)."""
    from tests.unit.test_auth_google import FakeGoogle

    fake = FakeGoogle()
    yield fake
    fake.close()
