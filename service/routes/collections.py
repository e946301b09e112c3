"""``GET /collections``: the named collections a client may see, with their indexed videos, clips and hours.

Counted as ``GET /videos`` lists: indexed videos only, and without the admin key only files inside the
media roots; a collection without such a video is not listed.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from indexer.collections import collection_stats

from ..deps import SessionDep, SettingsDep, ViewerDep
from ..errors import ERROR_RESPONSES

router = APIRouter(tags=["catalog"], responses=ERROR_RESPONSES)


class CollectionOut(BaseModel):
    name: str = Field(description="The collection's name ([a-z0-9][a-z0-9_-]{0,63}).")
    videos: int = Field(description="Its indexed videos this client may see.")
    clips: int = Field(description="Their clips (what a search ranks).")
    hours: float = Field(description="Their total duration, in hours.")


class CollectionList(BaseModel):
    collections: list[CollectionOut] = Field(description="Every collection with a video this client may see, by name.")


@router.get("/collections", response_model=CollectionList)
def list_collections(session: SessionDep, settings: SettingsDep, viewer: ViewerDep) -> CollectionList:
    """The named collections, by name, with their indexed videos, clips and hours."""
    inside = None if viewer.admin or not settings.media_roots else settings.media_roots
    rows = collection_stats(session, inside=inside, indexed_only=True)
    return CollectionList(
        collections=[CollectionOut(name=r.name, videos=r.videos, clips=r.clips, hours=r.hours) for r in rows]
    )
