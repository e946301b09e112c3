"""The API's schema at ``/openapi.json`` and its interactive reference at ``/docs``: Swagger UI served by the
app itself, so it works offline.

FastAPI's own ``/docs`` loads Swagger UI from a CDN. The same page is built here over the Swagger UI 5
files that the ``fastapi-swagger`` package ships, mounted under ``/docs/assets``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


def swagger_ui_dir() -> Path:
    """The folder holding swagger-ui-bundle.js and swagger-ui.css."""
    return Path(str(files("fastapi_swagger") / "resources"))


@router.get(OPENAPI_URL)
def openapi_schema(request: Request) -> dict[str, Any]:
    return request.app.openapi()


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - API",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon-32x32.png",
    )


def install(app: FastAPI) -> None:
    """Mount Swagger UI's files (the library's own code, no data) for ``/docs``; ``router`` is included by
    the app behind the read key."""
    app.mount(ASSETS_URL, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")
