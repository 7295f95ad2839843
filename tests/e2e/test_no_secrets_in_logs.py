"""No secret in any log: after a client's whole path through real processes (sign-up,
sign-in, refresh, a socket authenticated in its URL, a presigned download, a prompt,
logout), no process's log holds an access or refresh token, the password, a presigned
URL's signature or a `Bearer` credential. The gateway and auth_service of this test log
at DEBUG and print their spans (console exporter), so span attributes are searched too."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets

from contracts.base import utcnow
from contracts.generation import BaseModelName, ImageRecord
from contracts.ids import new_id
from contracts.topology import OBJECTS
from terra.records.images import ImageStore
from testing.stack import ServiceStack
from tests.e2e.client import PASSWORD, open_socket, register
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a brand new passphrase 77"


@pytest.fixture
def verbose_stack(stack_env, tmp_path) -> ServiceStack:
    # Spans are printed within 0.1 s of ending: uvicorn re-raises SIGTERM after its
    # shutdown, so the exporter's last batch at exit would never be written.
    stack = ServiceStack({**stack_env, "TERRA_LOG_LEVEL": "DEBUG", "TERRA_LOG_FORMAT": "json",
                          "TERRA_TRACE_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"},
                         tmp_path / "logs", cwd=ROOT)
    stack.start_auth()
    stack.url = stack.start_gateway()
    yield stack
    stack.stop()


async def a_presigned_download(http, nc, account) -> str:
    """An image record of the user's (written as the generator would), listed with its
    presigned URL; returns that URL's signature."""
    job_id, image_id = new_id(), new_id()
    await ImageStore(await nc.jetstream().key_value("terra_images")).create(ImageRecord(
        image_id=image_id, user_id=account.user_id, job_id=job_id,
        key=OBJECTS.image_key(account.user_id, job_id, f"{image_id}.png"), width=256,
        height=256, seed=1, prompt="a cat", model=BaseModelName.SCHNELL,
        expires_at=utcnow() + timedelta(days=1)))
    listed = await http.get(f"/api/generate/download/{account.user_id}", headers=account.headers)
    assert listed.status_code == 200, listed.text
    [image] = listed.json()
    return parse_qs(urlsplit(image["download_url"]).query)["X-Amz-Signature"][0]


async def test_no_process_logs_a_secret(verbose_stack, stack, nc):
    async with httpx.AsyncClient(base_url=verbose_stack.url, timeout=15) as http:
        account = await register(http)
        login = await http.post("/api/auth/login",
                                json={"email": account.email, "password": PASSWORD})
        assert login.status_code == 200
        refreshed = await http.post("/api/auth/refresh",
                                    json={"refresh_token": login.json()["refresh_token"]})
        assert refreshed.status_code == 200
        tokens = refreshed.json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await http.get("/api/me", headers=headers)).status_code == 200
        # A token in a REST query string is not how to authenticate, but it must not leak.
        await http.get("/api/me", params={"token": tokens["access_token"]})
        opened = await open_socket(verbose_stack.url, account, "/ws", since=0)
        await opened.socket.close()
        signature = await a_presigned_download(http, nc, account)
        prompt = await http.post("/api/prompt/optimize", headers=headers,
                                 json={"prompt": "a lighthouse in a storm"})
        assert prompt.status_code == 202, prompt.text
        assert (await http.post("/api/auth/logout", json={
            "refresh_token": tokens["refresh_token"]})).status_code == 204
        # A browser's path: the refresh token in a cookie, a socket by ticket, a new password.
        browser = await http.post("/api/auth/login", headers={"X-Terra-Refresh-Cookie": "1"},
                                  json={"email": account.email, "password": PASSWORD})
        cookie_token = http.cookies["terra_refresh"]
        renewed = await http.post("/api/auth/refresh",
                                  headers={"X-CSRF-Token": browser.json()["csrf_token"]})
        assert renewed.status_code == 200, renewed.text
        renewed_cookie = http.cookies["terra_refresh"]
        bearer = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
        ticket = (await http.post("/api/ws/ticket", headers=bearer)).json()["ticket"]
        async with websockets.connect(verbose_stack.url.replace("http", "ws", 1)
                                      + f"/ws?ticket={ticket}") as socket:
            assert json.loads(await socket.recv())["type"] == "ready"
        changed = await http.post("/api/auth/password", headers=bearer, json={
            "current_password": PASSWORD, "new_password": NEW_PASSWORD})
        assert changed.status_code == 200, changed.text

    await asyncio.sleep(1)  # the last spans printed
    verbose_stack.stop()
    secrets = {
        "access token (sign-up)": account.access_token,
        "refresh token (sign-up)": account.refresh_token,
        "access token (sign-in)": login.json()["access_token"],
        "refresh token (sign-in)": login.json()["refresh_token"],
        "access token (refreshed)": tokens["access_token"],
        "refresh token (refreshed)": tokens["refresh_token"],
        "password": PASSWORD,
        "new password": NEW_PASSWORD,
        "refresh token (cookie)": cookie_token,
        "refresh token (cookie, refreshed)": renewed_cookie,
        "access token (cookie mode)": renewed.json()["access_token"],
        "WebSocket ticket": ticket,
        "access token (new password)": changed.json()["access_token"],
        "refresh token (new password)": changed.json()["refresh_token"],
        "presigned URL signature": signature,
    }
    logs = {f"{process.log_path.parent.parent.name}/{process.log_path.name}":
            process.log_path.read_text(errors="replace")
            for process in (*verbose_stack.processes, *stack.processes)}
    gateway_log = next(process.log_path.read_text() for process in verbose_stack.processes
                       if process.name == "gateway")
    # The search means something: requests, sockets and spans were all logged.
    assert "WebSocket /ws?ticket=[redacted]" in gateway_log
    assert "WebSocket /ws?token=" in gateway_log and "GET /api/me?token=" in gateway_log
    assert '"http.url": "ws://' in gateway_log and '"http.target": "/api/auth/refresh"' in \
        gateway_log
    found = [f"{what} in {name}" for name, text in logs.items()
             for what, secret in secrets.items() if secret in text]
    found += [f"'Bearer ' in {name}: {match}" for name, text in logs.items()
              for match in re.findall(r".{0,60}Bearer (?!\[redacted\]).{0,20}", text)]
    assert found == []
