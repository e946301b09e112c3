"""The search page: plain HTML, CSS and JavaScript shipped in ``service/static`` (no CDN, works offline).

On a demo server (``create_app(demo_queries=...)``) the page's body carries ``data-demo``, which makes the page
ask ``GET /demo/queries`` for its example searches; other servers' pages never ask.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DEMO_BODY = "<body data-demo>"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index_page(request: Request) -> Response:
    headers = {"Cache-Control": "no-cache"}
    if request.app.state.demo_queries:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("<body>", DEMO_BODY, 1)
        return HTMLResponse(html, headers=headers)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)
