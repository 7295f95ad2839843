"""The whole stack as real processes: auth_service and gateways, over the session's
nats-server and S3, reached over HTTP and WebSocket like a client would."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testing.stack import ServiceStack, service_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack_env(nats_endpoint, s3, google_keys) -> dict[str, str]:
    return service_env(
        nats_endpoint.url,
        s3.endpoint,
        s3.service_keys,  # each service's own S3 key (on weed mini)
        # Each process signs in as itself with its own NKEY from this directory.
        TERRA_NATS_CREDENTIALS_DIR=str(nats_endpoint.credentials.directory),
        TERRA_LOG_FORMAT="text",
        TERRA_GOOGLE_CLIENT_IDS='["terra-web.apps.example", "terra-ios.apps.example"]',
        TERRA_GOOGLE_CERTS_URL=google_keys.certs_url,
        # Login and sign-up limits stay on but roomy enough for a test session's traffic,
        # which all comes from 127.0.0.1 (tests/e2e/test_throttles.py uses other addresses).
        TERRA_LOGIN_MAX_FAILURES_PER_ADDRESS="10000",
        TERRA_REGISTRATION_MAX_PER_ADDRESS="10000",
        # A deleted account is erased twice; the second pass this soon after the first.
        TERRA_ERASURE_SECOND_PASS_S="3",
    )


@pytest.fixture(scope="session")
def stack(stack_env, tmp_path_factory) -> ServiceStack:
    stack = ServiceStack(stack_env, tmp_path_factory.mktemp("stack-logs"), cwd=ROOT)
    stack.start_auth()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def gateway_url(stack) -> str:
    return stack.start_gateway()


@pytest.fixture
async def http(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=15) as client:
        yield client
