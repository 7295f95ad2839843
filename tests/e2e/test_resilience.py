"""Crashes lose nothing and leave nothing half-done."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from contracts.ids import new_id
from tests.e2e.client import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_auth_killed_mid_registration_leaves_no_half_written_user(stack, gateway_url):
    victim = stack.start_auth()  # a second replica in the queue group, to be killed
    emails = [f"crash-{new_id()[:10]}@example.com" for _ in range(40)]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:

        async def attempt(email: str) -> int:
            response = await http.post("/api/auth/register",
                                       json={"email": email, "password": PASSWORD})
            return response.status_code

        requests = [asyncio.create_task(attempt(e)) for e in emails]
        # Kill as soon as the first answer is back: the rest are mid-flight in both replicas.
        await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
        victim.kill()
        statuses = await asyncio.gather(*requests)
        assert set(statuses) <= {201, 503}, statuses
        assert 503 in statuses, "the kill hit no request in flight; the test proved nothing"

        # Every email is either a whole account (login works) or free (register works).
        for email, status in zip(emails, statuses, strict=True):
            login = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            if status == 201:
                assert login.status_code == 200, (email, login.text)
                continue
            if login.status_code == 200:  # the write committed before the crash
                continue
            assert login.status_code == 401, login.text
            retry = await http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
            assert retry.status_code == 201, (email, retry.text)


async def test_sigterm_finishes_the_requests_in_flight(stack, gateway_url):
    leaving = stack.start_auth()  # a replica being scaled down or redeployed
    emails = [f"drain-{new_id()[:10]}@example.com" for _ in range(30)]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        requests = [
            asyncio.create_task(
                http.post("/api/auth/register", json={"email": e, "password": PASSWORD})
            )
            for e in emails
        ]
        await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
        leaving.stop()  # SIGTERM: stop taking requests, finish those in hand, drain
        responses = await asyncio.gather(*requests)
    assert leaving.proc.returncode == 0, leaving.log()
    assert [r.status_code for r in responses] == [201] * len(emails)
