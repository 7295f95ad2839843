"""The running stack against its own OpenAPI document (schemathesis): no 5xx, and every
status, content type and body is the one documented.

One user is shared by the operations that leave it usable; those that end or change it
(deleting the account, changing the password, signing out) run on a fresh user each. Job
requests are made tiny (a 256 px, 1-step image; a 1-step training), and the shared user is
deleted at the end, so a job still queued is dropped before any worker runs it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.pytest.lazy import get_all_tests

from contracts.ids import new_id
from tests.e2e.client import PASSWORD, Account

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Each ends or changes the account it runs as.
OWN_USER = r"^(DELETE /api/me|POST /api/auth/(password|logout))$"
JOBS = r"^/api/(generate/image|training/(start|upload))$"
CONFIG = {
    # Valid and invalid requests: an invalid one must get a documented error too.
    "generation": {"mode": "all", "max-examples": 10},
    # The documented examples, the schema's boundary cases (coverage), then generated ones
    # (fuzzing). Stateful links are not described, so that phase has nothing to follow.
    "phases": {"stateful": {"enabled": False}},
    "operations": [{"include-path-regex": JOBS, "generation": {"max-examples": 3}}],
}
SETTINGS = settings(deadline=None, derandomize=True, print_blob=False, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def api_url(stack) -> str:
    # Its own gateway: answers that wait for an event give up after a second.
    stack.start_service("prompt", "prompt_service")
    return stack.start_gateway(TERRA_WAIT_TIMEOUT_S="1")


@pytest.fixture(scope="module")
def api_schema(api_url):
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json",
                                         config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture(scope="module")
def shared_user(api_url):
    with httpx.Client(base_url=api_url, timeout=15) as client:
        account = _register(client)
        yield account
        # Its jobs still queued are dropped unrun: the account is gone.
        deleted = client.delete("/api/me", headers=account.headers)
        assert deleted.status_code == 202, deleted.text


def _register(client: httpx.Client) -> Account:
    email = f"schema-{new_id()[:12]}@example.com"
    response = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(body["user"]["id"], email, body["access_token"], body["refresh_token"])


def tiny(case) -> None:
    """A job request that costs next to nothing if a worker runs it."""
    if not isinstance(case.body, dict):
        return
    if case.path == "/api/generate/image":
        case.body.update(width=256, height=256, steps=1, num_images=1)
    elif case.path == "/api/training/start":
        case.body.update(steps=1, rank=1, resolution=256)


def run_operations(schema, call, wanted: Callable[[str], bool]
                   ) -> tuple[Counter, dict[str, str]]:
    """Each operation's Hypothesis test as schemathesis builds it (its examples, then
    generated cases): the cases sent per operation, and each failing one's report.

    (`schemathesis.pytest.from_fixture` would do this as subtests, but its pytest plugin
    sets `Function._nodeid`, which pytest 9 no longer has.)"""
    sent: Counter = Counter()
    failures: dict[str, str] = {}

    def test(case) -> None:
        sent[case.operation.label] += 1
        call(case)

    for result in get_all_tests(schema=schema, test_func=test, settings=SETTINGS,
                                given_kwargs={}):
        operation, hypothesis_test = result.ok()  # an invalid document raises here
        if not wanted(operation.label):
            continue
        try:
            hypothesis_test()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report them all
            failures[operation.label] = f"{type(exc).__name__}: {exc}"
    return sent, failures


def report(sent: Counter, failures: dict[str, str]) -> str:
    return (f"{len(sent)} operations, {sum(sent.values())} cases sent; "
            f"{len(failures)} failed")


def test_the_api_answers_as_documented(api_schema, api_url, shared_user):
    def call(case) -> None:
        tiny(case)
        case.call_and_validate(base_url=api_url, headers=shared_user.headers, checks=CHECKS,
                               timeout=30)

    sent, failures = run_operations(api_schema, call,
                                    lambda label: not re.match(OWN_USER, label))
    print(report(sent, failures))
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert len(sent) >= 25  # every operation but the account-ending ones ran


def test_account_ending_operations_answer_as_documented(api_schema, api_url):
    def call(case) -> None:
        with httpx.Client(base_url=api_url, timeout=15) as client:
            fresh = _register(client)
        if case.path == "/api/auth/logout" and isinstance(case.body, dict) \
                and len(case.body.get("refresh_token") or "") % 2:
            # Half the time, its own refresh token: a sign-out that really ends a session.
            case.body["refresh_token"] = fresh.refresh_token
        case.call_and_validate(base_url=api_url, headers=fresh.headers, checks=CHECKS,
                               timeout=30)

    sent, failures = run_operations(api_schema, call, lambda label: re.match(OWN_USER, label))
    print(report(sent, failures))
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert set(sent) == {"DELETE /api/me", "POST /api/auth/password", "POST /api/auth/logout"}
