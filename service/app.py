"""The FastAPI app: ``create_app(settings)`` builds it; its lifespan loads the shared resources once.

uvicorn --factory service.app:create_app      # settings from TVR_* variables
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import errors
from .deps import ReaderDep
from .logs import AccessLog
from .resources import EncoderFactory, Resources
from .routes import admin, collections, demo, docs, moments, ops, search, videos, web
from .settings import ServiceSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Text-to-video search over a catalog of indexed clips.

Search with `GET /search?q=...`; results carry a thumbnail and a media URL with a `#t=start,end` fragment.
Admin routes need the `X-API-Key` header (set `TVR_API_KEY` on the server to enable them). A server with
`TVR_READ_API_KEY` set asks for that key (or the admin key) on every route but `/healthz`, `/readyz` and the
search page itself, in the `X-API-Key` header or the `tvr_key` cookie."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    resources: Resources = app.state.resources
    await resources.start()  # loading continues in the background; /readyz tells when it is done
    try:
        yield
    finally:
        await resources.close()


def create_app(
    settings: ServiceSettings | None = None,
    *,
    encoder_factory: EncoderFactory | None = None,
    demo_queries: Sequence[str] | None = None,
) -> FastAPI:
    """The app over ``settings`` (default: from the environment). ``encoder_factory(settings)`` replaces
    loading ``settings.checkpoint`` (an encoder already in memory, a test that controls timing).
    ``demo_queries`` (``tvr demo`` only) adds ``GET /demo/queries`` and the page's list of example searches."""
    from importlib.metadata import PackageNotFoundError, version

    settings = settings or ServiceSettings()
    try:
        app_version = version("tvr")
    except PackageNotFoundError:
        app_version = "0"
    app = FastAPI(
        title="tvr",
        version=app_version,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by docs.router, behind the read key
    )
    app.state.resources = Resources(settings, encoder_factory)
    app.state.demo_queries = list(demo_queries) if demo_queries else None
    errors.install(app)
    app.add_middleware(AccessLog, metrics=app.state.resources.metrics)
    for module in (search, videos, moments, collections, admin, ops, docs):  # data, metrics, the API schema
        app.include_router(module.router, dependencies=[ReaderDep])
    if demo_queries:
        app.include_router(demo.router, dependencies=[ReaderDep])
    app.include_router(ops.health)
    app.include_router(web.router)  # the page itself holds no data: it asks for the read key when needed
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    docs.install(app)  # Swagger UI's files from the local package, not FastAPI's CDN
    search.install_schemas(app)  # POST /search's two body types
    return app
