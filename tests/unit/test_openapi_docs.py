"""`/docs` (Swagger UI) and `/redoc` load nothing from any other host: every URL in their
HTML is the gateway's own, and each answers 200 with its content type."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app

BASE = "http://testserver"
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".png": ("image/png",), ".json": ("application/json",)}


class _References(HTMLParser):
    """Every `src` and `href` of the page, and every URL its inline scripts name."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs
                      if name in ("src", "href", "spec-url", "action") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.urls += re.findall(r"""(?:url|src|href)\s*:\s*['"]([^'"]+)['"]""", data)
            self.urls += re.findall(r"https?://[^\s'\"]+", data)


@pytest.fixture(scope="module")
def client():
    # No lifespan: the pages and their assets need none of the gateway's parts.
    return TestClient(create_app())


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_page_names_only_same_origin_urls_and_each_answers(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(response.text)
    assert parser.urls, "the page references nothing"
    assert "/openapi.json" in parser.urls
    for url in parser.urls:
        absolute = urljoin(BASE + page, url)
        assert urlsplit(absolute).netloc == "testserver", f"{page} loads {url} from elsewhere"
        answer = client.get(absolute)
        assert answer.status_code == 200, url
        suffix = "." + url.rsplit(".", 1)[-1]
        if suffix in CONTENT_TYPES:
            assert answer.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], url


def test_swagger_ui_asks_no_online_validator(client):
    assert '"validatorUrl": null' in client.get("/docs").text


def test_the_websocket_asyncapi_document_is_served(client):
    response = client.get("/asyncapi/websocket.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["asyncapi"].startswith("3.")
    assert "/ws" in {channel["address"] for channel in document["channels"].values()}


def test_the_event_schemas_it_names_are_served_beside_it(client):
    document = client.get("/asyncapi/websocket.json").json()
    refs = {option["$ref"] for schema in document["components"]["schemas"].values()
            for option in schema.get("properties", {}).get("payload", {}).get("oneOf", [])}
    assert "./generation.progressed.v1.json" in refs
    for ref in refs:
        answer = client.get(urljoin(BASE + "/asyncapi/websocket.json", ref))
        assert answer.status_code == 200, ref
        assert answer.json()["properties"]["type"]["const"] == ref[2:-5]
    assert client.get("/asyncapi/nothing-here.json").status_code == 404
