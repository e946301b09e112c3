"""Dependencies as named aliases: routes read like their signatures.

The ones that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency on its thread pool,
a thread hop per dependency per request, which cost the search route a fifth of its throughput.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from indexer.store import PublishedIndex

from .resources import Resources
from .settings import ServiceSettings


async def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> ServiceSettings:
    return resources.settings


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]


async def ready_index(resources: ResourcesDep) -> PublishedIndex:
    """The index to answer with; 503 (NotReady) until the encoder, catalog and index are loaded."""
    return resources.require_ready()


IndexDep = Annotated[PublishedIndex, Depends(ready_index)]


def catalog_session(resources: ResourcesDep) -> Iterator[Session]:
    with resources.read_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(catalog_session)]

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Admin routes: the value of TVR_API_KEY on the server."
)


async def require_admin(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """403 while TVR_API_KEY is unset (admin disabled); 401 for a missing or wrong key."""
    if settings.api_key is None:
        raise HTTPException(403, "admin routes are disabled: start the server with TVR_API_KEY set to enable them")
    if not key:
        raise HTTPException(401, "this route needs the X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"})
    if not secrets.compare_digest(key.encode(), settings.api_key.get_secret_value().encode()):
        raise HTTPException(401, "wrong X-API-Key", headers={"WWW-Authenticate": "X-API-Key"})


AdminDep = Annotated[None, Depends(require_admin)]
