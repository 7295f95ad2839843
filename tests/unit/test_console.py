"""The web console's serving (gateway/console.py): the page and its files with a strict
CSP and the usual headers, nothing outside web/dist, a clear 503 when it was not built,
and the public client config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import console
from gateway.app import create_app
from gateway.config import ConsoleSettings
from gateway.console import console_settings


def client_for(settings: ConsoleSettings) -> TestClient:
    app = FastAPI()
    app.include_router(console.router)

    async def given() -> ConsoleSettings:
        return settings

    app.dependency_overrides[console_settings] = given
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture
def dist(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>Terra</title>")
    (tmp_path / "main-ABCDEFGH.js").write_text("console.log(1)")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    (tmp_path / "sw.js").write_text("self.addEventListener('push', () => {})")
    (tmp_path.parent / "secret.txt").write_text("not for you")
    return tmp_path


def directives(csp: str) -> dict[str, str]:
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in csp.split("; ")}


def test_the_page_carries_a_strict_csp_and_the_usual_headers(dist):
    client = client_for(ConsoleSettings(console_dist=dist, s3_endpoint="127.0.0.1:8333"))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = directives(page.headers["content-security-policy"])
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"  # no inline script, no CDN, no Google
    assert csp["connect-src"] == "'self' ws://127.0.0.1:8000 http://127.0.0.1:8333"
    assert "http://127.0.0.1:8333" in csp["img-src"]
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    assert "camera=()" in page.headers["permissions-policy"]


def test_google_is_allowed_only_when_a_client_id_is_configured(dist):
    plain = client_for(ConsoleSettings(console_dist=dist))
    assert "accounts.google.com" not in plain.get("/").headers["content-security-policy"]
    assert plain.get("/api/config").json()["google_client_id"] is None

    google = client_for(ConsoleSettings(console_dist=dist,
                                        google_client_ids="web.apps.example,ios.apps.example"))
    csp = directives(google.get("/").headers["content-security-policy"])
    assert csp["script-src"] == "'self' https://accounts.google.com/gsi/client"
    assert google.get("/api/config").json()["google_client_id"] == "web.apps.example"


def test_the_public_s3_endpoint_is_the_image_origin(dist):
    client = client_for(ConsoleSettings(console_dist=dist, s3_public_endpoint="img.example:443",
                                        s3_public_secure=True))
    assert client.get("/api/config").json()["s3_origin"] == "https://img.example:443"
    csp = directives(client.get("/").headers["content-security-policy"])
    assert "https://img.example:443" in csp["img-src"]


def test_a_forged_host_header_never_reaches_the_csp(dist):
    client = client_for(ConsoleSettings(console_dist=dist))
    page = client.get("/", headers={"host": "evil.example; script-src *"})
    csp = directives(page.headers["content-security-policy"])
    assert csp["script-src"] == "'self'" and "evil" not in page.headers["content-security-policy"]


def test_hashed_bundles_are_immutable_and_only_built_files_are_served(dist):
    client = client_for(ConsoleSettings(console_dist=dist))
    bundle = client.get("/console/main-ABCDEFGH.js")
    assert bundle.status_code == 200 and "immutable" in bundle.headers["cache-control"]
    assert bundle.headers["content-security-policy"]
    assert client.get("/console/favicon.svg").headers["cache-control"] == "no-cache"
    for path in ("/console/../secret.txt", "/console/%2e%2e%2fsecret.txt",
                 "/console/..%2Fsecret.txt", "/console/secret.txt", "/console/index.py"):
        refused = client.get(path)
        assert refused.status_code == 404, path
        assert "not for you" not in refused.text


def test_the_service_worker_is_served_at_the_root_never_cached(dist):
    client = client_for(ConsoleSettings(console_dist=dist))
    worker = client.get("/sw.js")
    assert worker.status_code == 200 and "addEventListener('push'" in worker.text
    assert worker.headers["content-type"].startswith("text/javascript")
    assert worker.headers["service-worker-allowed"] == "/"  # its scope: the whole console
    assert worker.headers["cache-control"] == "no-cache"  # a new build reaches browsers
    assert worker.headers["x-content-type-options"] == "nosniff"
    for response in (worker, client.get("/")):
        csp = directives(response.headers["content-security-policy"])
        assert csp["worker-src"] == "'self'" and csp["script-src"] == "'self'"
    assert client.get("/console/sw.js").headers["cache-control"] == "no-cache"


def test_an_unbuilt_service_worker_is_a_clear_503(tmp_path):
    client = client_for(ConsoleSettings(console_dist=tmp_path / "missing"))
    worker = client.get("/sw.js")
    assert worker.status_code == 503
    assert worker.headers["content-type"] == "application/problem+json"


def test_an_unbuilt_console_says_to_run_make(tmp_path):
    client = client_for(ConsoleSettings(console_dist=tmp_path / "missing"))
    page = client.get("/")
    assert page.status_code == 503
    assert page.headers["content-type"] == "application/problem+json"
    assert "make" in page.json()["detail"]


def test_the_gateway_serves_the_console_outside_its_api_description():
    paths = create_app().openapi()["paths"]
    assert "/api/config" in paths
    assert "/" not in paths and not any(path.startswith("/console") for path in paths)
    assert "/sw.js" not in paths


def test_the_openapi_document_is_written_without_a_server(tmp_path):
    out = tmp_path / "openapi.json"
    subprocess.run([sys.executable, "-m", "gateway.console", "openapi", str(out)], check=True)
    assert '"/api/ws/ticket"' in out.read_text()


WEB = Path(__file__).resolve().parents[2] / "web"


@pytest.mark.skipif(not (WEB / "node_modules" / ".bin" / "tsc").exists(),
                    reason="the console's npm packages are not installed (make console)")
@pytest.mark.parametrize("removed", [None, "/api/ws/ticket"])
def test_a_route_the_console_uses_breaks_its_build_when_it_goes(tmp_path, removed):
    """The types come from the gateway's OpenAPI document and tsc checks every call: take
    a route away and the build fails, naming it."""
    schema = create_app().openapi()
    if removed:
        del schema["paths"][removed]
    shutil.copytree(WEB / "src", tmp_path / "src", ignore=shutil.ignore_patterns("api.d.ts"))
    shutil.copy(WEB / "tsconfig.json", tmp_path)
    (tmp_path / "node_modules").symlink_to(WEB / "node_modules")
    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    bin_ = WEB / "node_modules" / ".bin"
    subprocess.run([bin_ / "openapi-typescript", "openapi.json", "--default-non-nullable",
                    "false", "-o", "src/api.d.ts"], cwd=tmp_path, check=True,
                   capture_output=True)
    checked = subprocess.run([bin_ / "tsc", "--noEmit"], cwd=tmp_path, check=False,
                             capture_output=True, text=True)
    if removed is None:
        assert checked.returncode == 0, checked.stdout
    else:
        assert checked.returncode != 0 and removed in checked.stdout, checked.stdout
