"""The whole stack as real processes: auth_service and gateways, over the session's
nats-server and S3, reached over HTTP and WebSocket like a client would.

When a test fails, the logs of the services it ran with are kept under
`.terra-test-logs/<module>.<test>/` (gitignored), and its report names them with the last
lines each wrote during the test."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from testing.stack import ServiceStack, service_env, service_processes

ROOT = Path(__file__).resolve().parents[2]
KEPT_LOGS = ROOT / ".terra-test-logs"
TAIL_LINES = 20
# Per test: each service log's size as the test began, or None for a service that had
# stopped by then (not one this test ran with). A log not listed began during the test.
_LOG_OFFSETS = pytest.StashKey[dict[Path, int | None]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_LOG_OFFSETS] = {process.log_path: process.log_size() if process.running else None
                                for process in service_processes()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and _LOG_OFFSETS in item.stash:
        kept = keep_service_logs(item, item.stash[_LOG_OFFSETS])
        if kept:
            report.sections.append(("service logs", kept))
    return report


def keep_service_logs(item: pytest.Item, offsets: dict[Path, int | None]) -> str | None:
    """Copy the logs of the services `item` ran with where a later run leaves them be;
    what to read first: each one's last lines written during the test."""
    kept = KEPT_LOGS / re.sub(r"[^\w.\[\]-]", "_", f"{item.path.stem}.{item.name}")
    shutil.rmtree(kept, ignore_errors=True)  # an earlier failure of the same test
    lines = []
    for process in service_processes():
        offset = offsets.get(process.log_path, 0)
        if offset is None or not process.log_path.exists():
            continue
        kept.mkdir(parents=True, exist_ok=True)
        copy = kept / f"{process.log_path.parent.name}-{process.log_path.name}"
        shutil.copyfile(process.log_path, copy)
        with process.log_path.open("rb") as log:
            log.seek(offset)
            tail = log.read().decode(errors="replace").splitlines()[-TAIL_LINES:]
        state = "running" if process.running else f"exited {process.proc.returncode}"
        lines.append(f"{copy.relative_to(ROOT)} ({process.name}, {state}): "
                     + ("last lines written during the test:" if tail
                        else "nothing written during the test"))
        lines += [f"    {line}" for line in tail]
    return "\n".join(lines) or None


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
def generator(stack):
    # Compatible jobs share a loop (on a CPU that is off by default): the batch path runs.
    return stack.start_service("generator", "generator_service",
                               TERRA_PROGRESS_INTERVAL_S="0.01", TERRA_BATCH_MAX_IMAGES="4")


@pytest.fixture(scope="session")
def notifier(stack, tmp_path_factory):
    """notifier_service, its retries a fraction of a second apart; its VAPID key is made
    in a data dir of its own. Local profile: it may reach the stand-ins on loopback."""
    return stack.start_service(
        "notifier", "notifier_service", TERRA_NOTIFY_RETRY_SCHEDULE_S="0.2,0.2",
        TERRA_DATA_DIR=str(tmp_path_factory.mktemp("notifier-data")))


@pytest.fixture(scope="session")
def gateway_url(stack) -> str:
    return stack.start_gateway()


@pytest.fixture
async def http(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=15) as client:
        yield client
