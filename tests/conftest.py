"""Shared fixtures: real NATS and S3 servers started once per session, and settings
pointing at them. Tests isolate themselves with fresh ids, not fresh servers."""

from __future__ import annotations

import os

import nats
import pytest

from tests.infra import S3Endpoint, nats_server, s3_server

# Tests never read a developer's environment by accident.
for key in [k for k in os.environ if k.startswith("TERRA_")]:
    del os.environ[key]


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory) -> str:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> S3Endpoint:
    with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest.fixture
def fresh_nats_url(tmp_path) -> str:
    """A server of its own, for tests about what exists on a server (provisioning)."""
    with nats_server(tmp_path / "nats") as url:
        yield url


@pytest.fixture
async def nc(nats_url):
    connection = await nats.connect(nats_url)
    yield connection
    await connection.drain()


@pytest.fixture
def runtime_env(nats_url, s3, monkeypatch) -> dict[str, str]:
    """Environment variables that point any Terra settings class at the test servers."""
    env = {
        "TERRA_NATS_URL": nats_url,
        "TERRA_S3_ENDPOINT": s3.endpoint,
        "TERRA_S3_ACCESS_KEY": s3.access_key,
        "TERRA_S3_SECRET_KEY": s3.secret_key,
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
