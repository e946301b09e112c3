"""Clip thumbnails over HTTP: the JPEG from the catalog (or a legacy file), with a strong ETag and 304s.

A clip's thumbnail never changes: re-indexing a video replaces its clips with new ids (ids are never
reused), so the answer may be cached as immutable; its ETag is a hash of the bytes, and a request whose
``If-None-Match`` names it gets 304 without a body. Thumbnails ingested before catalog revision 0004 are
files under ``TVR_DATA_DIR/thumbnails`` that the clip row names; they are served the same way.
"""

from __future__ import annotations

import hashlib

from fastapi import Response
from sqlalchemy.orm import Session

from indexer import queries
from indexer.catalog import Clip

from .access import thumbnail_path
from .settings import ServiceSettings

MAX_AGE_S = 365 * 86_400


def thumbnail_jpeg(session: Session, clip: Clip, settings: ServiceSettings) -> bytes | None:
    """The clip's JPEG: the catalog's bytes, else the legacy file its row names (inside the thumbnails
    folder only); None when it has neither."""
    jpeg = queries.thumbnail_jpeg(session, clip.id)
    if jpeg is not None:
        return jpeg
    path = thumbnail_path(settings.thumbnails_dir, clip.thumbnail)
    return path.read_bytes() if path is not None else None


def strong_etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 section 13.1.2: ``*`` or a listed entity tag equal to ``etag`` (weak comparison)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def jpeg_response(jpeg: bytes, if_none_match: str | None, *, private: bool) -> Response:
    """200 with the JPEG, or 304 when the client holds these bytes; ``private`` keeps shared caches out (a
    server that asks for a read key)."""
    etag = strong_etag(jpeg)
    headers = {"ETag": etag, "Cache-Control": f"{'private' if private else 'public'}, max-age={MAX_AGE_S}, immutable"}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(jpeg, media_type="image/jpeg", headers=headers)
