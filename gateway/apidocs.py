"""The API's pages: `/docs` (Swagger UI) and `/redoc` with every asset served by the
gateway, and the WebSocket AsyncAPI document with the event schemas it names."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from contracts.export import SCHEMA_DIR
from gateway.problems import Problem

# The committed contracts: `websocket.asyncapi` and each event schema it names.
_SCHEMA_NAMES = frozenset(path.stem for path in SCHEMA_DIR.glob("*.json"))

# Swagger UI and ReDoc as a package ships them (`fastapi-offline`), served by the gateway:
# the pages load nothing from any other host.
DOCS_ASSETS = "/docs/assets"
_ASSETS_DIR = files("fastapi_offline") / "static"


def install_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc`, with every asset served from `DOCS_ASSETS`."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(_ASSETS_DIR)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # Swagger UI's default sends the document to an online validator for a badge.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False})

    @app.get("/asyncapi/{name}.json", include_in_schema=False)
    async def asyncapi(name: str) -> FileResponse:
        """The WebSocket AsyncAPI document and the event schemas it names (beside it)."""
        stem = "websocket.asyncapi" if name == "websocket" else name
        if stem not in _SCHEMA_NAMES:
            raise Problem(404, "not-found", f"No document {name}.json.")
        return FileResponse(SCHEMA_DIR / f"{stem}.json", media_type="application/json")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url, title=f"{app.title} API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
