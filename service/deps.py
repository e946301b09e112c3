"""Dependencies as named aliases: routes read like their signatures.

The ones that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency on its thread pool,
a thread hop per dependency per request, which cost the search route a fifth of its throughput.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader
from sqlalchemy.orm import Session

from .access import Viewer
from .resources import Resources
from .search import ServedIndex
from .settings import ServiceSettings

KEY_COOKIE = "tvr_key"


async def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> ServiceSettings:
    return resources.settings


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]


async def ready_index(resources: ResourcesDep) -> ServedIndex:
    """The index to answer with; 503 (NotReady) until the encoder, catalog and index are loaded."""
    return resources.require_ready()


IndexDep = Annotated[ServedIndex, Depends(ready_index)]


def catalog_session(resources: ResourcesDep) -> Iterator[Session]:
    with resources.read_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(catalog_session)]

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="TVR_API_KEY (admin routes), or TVR_READ_API_KEY (every route, when the server sets it).",
)
key_cookie = APIKeyCookie(
    name=KEY_COOKIE, auto_error=False, description="The read key, as the search page keeps it for its player."
)
CHALLENGE = {"WWW-Authenticate": "X-API-Key"}


def _matches(key: str | None, expected: str) -> bool:
    return bool(key) and secrets.compare_digest(str(key).encode(), expected.encode())


async def require_reader(
    settings: SettingsDep,
    key: Annotated[str | None, Security(api_key_header)],
    cookie: Annotated[str | None, Security(key_cookie)],
) -> None:
    """With TVR_READ_API_KEY set: 401 unless the header or cookie holds the read key or the admin key."""
    allowed = settings.keys_granting_reads()
    cookie = unquote(cookie) if cookie else None  # the page percent-encodes the key it stores
    if settings.read_api_key is None or any(_matches(given, k) for given in (key, cookie) for k in allowed):
        return
    detail = "this server needs its read key" if not (key or cookie) else "wrong key"
    raise HTTPException(401, f"{detail}: send it in the X-API-Key header (TVR_READ_API_KEY)", headers=CHALLENGE)


ReaderDep = Depends(require_reader)


async def get_viewer(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> Viewer:
    """Who asks: a request with the admin key sees server paths and videos that are not indexed."""
    return Viewer(admin=settings.api_key is not None and _matches(key, settings.api_key.get_secret_value()))


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


async def require_admin(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """403 while TVR_API_KEY is unset (admin disabled); 401 for a missing or wrong key."""
    if settings.api_key is None:
        raise HTTPException(403, "admin routes are disabled: start the server with TVR_API_KEY set to enable them")
    if not key:
        raise HTTPException(401, "this route needs the X-API-Key header", headers=CHALLENGE)
    if not _matches(key, settings.api_key.get_secret_value()):
        raise HTTPException(401, "wrong X-API-Key", headers=CHALLENGE)


AdminDep = Annotated[None, Depends(require_admin)]
