"""Catalog reads for the service: clips by FAISS ids with their videos, videos by page, thumbnails.

from indexer.settings import Settings
from indexer.db import make_sessionmaker, open_catalog
from indexer.store import load_published_index
from indexer.queries import clips_by_ids

settings = Settings()
sessions = make_sessionmaker(open_catalog(settings))
index = load_published_index(settings.data_dir)          # memory-mapped, read-only
scores, ids = index.search(query_vectors, k)              # per-call nprobe / efSearch
with sessions() as session:
    hits = clips_by_ids(session, ids[0])                  # {clip id: Clip with .video loaded}
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from .catalog import Clip, Video, VideoStatus


def clips_by_ids(session: Session, ids: Iterable[int]) -> dict[int, Clip]:
    """The clips with these ids (FAISS results; -1 and unknown ids are left out), each with its video
    loaded and without its embedding. Ordering is the caller's: iterate over its ids."""
    wanted = sorted({int(i) for i in ids if int(i) >= 0})
    if not wanted:
        return {}
    rows = session.scalars(select(Clip).where(Clip.id.in_(wanted)).options(joinedload(Clip.video))).all()
    return {clip.id: clip for clip in rows}


def list_videos(
    session: Session, *, offset: int = 0, limit: int = 50, status: VideoStatus | None = VideoStatus.indexed
) -> tuple[list[Video], int]:
    """A page of videos by id, and how many there are in all (of ``status``; None: every status)."""
    query = select(Video)
    count = select(func.count()).select_from(Video)
    if status is not None:
        query, count = query.where(Video.status == status), count.where(Video.status == status)
    page = session.scalars(query.order_by(Video.id).offset(offset).limit(limit)).all()
    return list(page), int(session.scalar(count) or 0)


def get_video(session: Session, video_id: int) -> Video | None:
    return session.get(Video, video_id)


def thumbnail_file(thumbnails_dir: Path, clip: Clip) -> Path | None:
    """The JPEG of a clip, or None; never a path outside ``thumbnails_dir``."""
    if not clip.thumbnail:
        return None
    root = thumbnails_dir.resolve()
    path = (root / clip.thumbnail).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path
