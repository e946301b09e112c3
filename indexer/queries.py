"""Catalog reads: the one home of the SELECTs that the indexer's planning and sync and the service share.

Plain functions of a SQLAlchemy ``Session`` (writes are ``records``). The search path reads plain columns
through statements built once (``clip_rows``); pages of videos and single rows read ORM objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Row, bindparam, func, or_, select
from sqlalchemy.orm import Session

from .catalog import Clip, ClipThumbnail, TextTrack, Video, VideoStatus
from .errors import IndexerError

IN_CHUNK = 900  # ids per IN (...) list: below SQLite's oldest limit of 999 bound parameters
FETCH_BATCH = 5_000  # embeddings per query when an index is built


@dataclass(frozen=True)
class ClipRow:
    """A clip joined with its video: what a search result shows."""

    clip_id: int
    video_id: int
    start: float
    end: float
    title: str | None
    path: str
    duration: float | None


# Built once: a statement with an expanding IN list is compiled once per list length and cached, where
# building the select on every call cost about as much as running it (1.7 -> 0.7 ms for a page of 10).
_CLIPS_BY_ID = select(Clip.id, Clip.video_id, Clip.start, Clip.end).where(Clip.id.in_(bindparam("ids", expanding=True)))
_INDEXED_VIDEOS_BY_ID = select(Video.id, Video.title, Video.path, Video.duration).where(
    Video.id.in_(bindparam("ids", expanding=True)), Video.status == VideoStatus.indexed
)


def clip_rows(session: Session, clip_ids: Iterable[int]) -> dict[int, ClipRow]:
    """Clips of indexed videos by id; ids of deleted clips (an index not yet republished) are absent.

    Plain columns in two primary-key look-ups (clips, then their videos): ORM objects are ten times slower
    for the thousand candidates that ``group_by=video`` reads, and one joined query lets SQLite drive it from
    the videos' status index instead of the clip ids (seconds for 80 ids on a million clips).
    """
    ids = sorted({int(i) for i in clip_ids if int(i) >= 0})
    clips: list[Row[Any]] = []
    for begin in range(0, len(ids), IN_CHUNK):
        clips.extend(session.execute(_CLIPS_BY_ID, {"ids": ids[begin : begin + IN_CHUNK]}))
    video_ids = sorted({c.video_id for c in clips})
    videos: dict[int, Row[Any]] = {}
    for begin in range(0, len(video_ids), IN_CHUNK):
        rows = session.execute(_INDEXED_VIDEOS_BY_ID, {"ids": video_ids[begin : begin + IN_CHUNK]})
        videos.update({row.id: row for row in rows})
    return {
        c.id: ClipRow(c.id, c.video_id, c.start, c.end, v.title, v.path, v.duration)
        for c in clips
        if (v := videos.get(c.video_id)) is not None
    }


def under_any(folders: Sequence[Path]) -> Any:
    """A condition on ``Video.path``: the file lies inside one of ``folders`` (absolute, resolved)."""
    return or_(*(Video.path.startswith(str(folder).rstrip(os.sep) + os.sep, autoescape=True) for folder in folders))


def list_videos(
    session: Session,
    *,
    offset: int = 0,
    limit: int = 50,
    status: VideoStatus | None = VideoStatus.indexed,
    inside: Sequence[Path] | None = None,
) -> tuple[list[Video], int]:
    """A page of videos by id, and how many there are in all: of ``status`` (None: every status), and with
    ``inside``, only files inside those folders."""
    query = select(Video)
    count = select(func.count()).select_from(Video)
    if status is not None:
        query, count = query.where(Video.status == status), count.where(Video.status == status)
    if inside is not None:
        query, count = query.where(under_any(inside)), count.where(under_any(inside))
    page = session.scalars(query.order_by(Video.id).offset(offset).limit(limit)).all()
    return list(page), int(session.scalar(count) or 0)


def get_video(session: Session, video_id: int) -> Video | None:
    return session.get(Video, video_id)


def get_clip(session: Session, clip_id: int) -> Clip | None:
    return session.get(Clip, clip_id)


def clip_counts(session: Session, video_ids: Sequence[int]) -> dict[int, int]:
    """Clips per video, for a page of videos."""
    if not video_ids:
        return {}
    rows = session.execute(
        select(Clip.video_id, func.count()).where(Clip.video_id.in_(list(video_ids))).group_by(Clip.video_id)
    )
    return {int(video_id): int(count) for video_id, count in rows}


def text_tracks_of(session: Session, video_id: int) -> list[TextTrack]:
    """A video's subtitle and transcript tracks, in the order of their sources."""
    return list(session.scalars(select(TextTrack).where(TextTrack.video_id == video_id).order_by(TextTrack.source)))


def clips_of(session: Session, video_id: int) -> list[Clip]:
    return list(session.scalars(select(Clip).where(Clip.video_id == video_id).order_by(Clip.position)))


@dataclass(frozen=True)
class ClipVectors:
    """Clips of one video in time order with their embeddings (float32 rows)."""

    ids: list[int]
    windows: list[tuple[float, float]]  # (start, end) seconds
    vectors: np.ndarray  # (clips, dim)


def clip_vectors(session: Session, video_id: int, start: float | None = None, end: float | None = None) -> ClipVectors:
    """The video's clips and embeddings, or only those overlapping ``start``..``end`` seconds."""
    query = select(Clip.id, Clip.start, Clip.end, Clip.embedding).where(Clip.video_id == video_id)
    if start is not None:
        query = query.where(Clip.end > start)
    if end is not None:
        query = query.where(Clip.start < end)
    rows = session.execute(query.order_by(Clip.position)).all()
    vectors = np.stack([np.frombuffer(r[3], np.float32) for r in rows]) if rows else np.empty((0, 0), np.float32)
    return ClipVectors([int(r[0]) for r in rows], [(float(r[1]), float(r[2])) for r in rows], vectors)


def thumbnail_jpeg(session: Session, clip_id: int) -> bytes | None:
    """The clip's JPEG as the catalog holds it, or None (no thumbnail, or a legacy file: ``Clip.thumbnail``)."""
    return session.scalar(select(ClipThumbnail.jpeg).where(ClipThumbnail.clip_id == clip_id))


def clips_with_thumbnails(session: Session, video_id: int) -> set[int]:
    """Ids of the video's clips whose JPEG the catalog holds."""
    rows = session.scalars(
        select(ClipThumbnail.clip_id).join(Clip, Clip.id == ClipThumbnail.clip_id).where(Clip.video_id == video_id)
    )
    return set(rows)


def videos_by_path(session: Session, paths: Sequence[str]) -> dict[str, Row[Any]]:
    """What planning needs of the catalog rows of ``paths`` (absent paths are left out)."""
    found: dict[str, Row[Any]] = {}
    for begin in range(0, len(paths), IN_CHUNK):
        rows = session.execute(
            select(
                Video.id,
                Video.path,
                Video.status,
                Video.checkpoint_id,
                Video.content_hash,
                Video.size,
                Video.mtime_ns,
                Video.title,
                Video.meta,
                Video.collection,
            ).where(Video.path.in_(paths[begin : begin + IN_CHUNK]))
        )
        found.update({row.path: row for row in rows})
    return found


def indexed_paths_of_other_checkpoints(session: Session, checkpoint_id: str) -> list[str]:
    rows = session.scalars(
        select(Video.path).where(Video.status == VideoStatus.indexed, Video.checkpoint_id != checkpoint_id)
    )
    return list(rows)


def indexed_checkpoints(session: Session) -> dict[str, int]:
    """Checkpoint id -> number of indexed videos whose embeddings it made."""
    rows = session.execute(
        select(Video.checkpoint_id, func.count())
        .where(Video.status == VideoStatus.indexed)
        .group_by(Video.checkpoint_id)
    ).all()
    return {str(ckpt): count for ckpt, count in rows}


def catalog_clip_ids(session: Session) -> np.ndarray:
    """Ids of the clips of indexed videos, ascending (what the index must hold, exactly once each)."""
    ids = session.scalars(
        select(Clip.id)
        .join(Video, Clip.video_id == Video.id)
        .where(Video.status == VideoStatus.indexed)
        .order_by(Clip.id)
    ).all()
    return np.asarray(ids, dtype=np.int64)


Fingerprint = tuple[int, int, int]  # (count, largest id, sum of ids) of a set of clip ids


def indexed_clips_fingerprint(session: Session) -> Fingerprint:
    """The fingerprint of the clips of indexed videos: what the index must hold, in one aggregate query
    instead of reading every id.

    Clip ids only grow and are never reused, so a commit that adds clips raises the largest id or the sum,
    one that removes them lowers the count, and one that replaces a video's clips raises the sum (its new
    ids are larger than the old ones): equal fingerprints mean the same clips.
    """
    count, largest, total = session.execute(
        select(func.count(Clip.id), func.max(Clip.id), func.sum(Clip.id))
        .join(Video, Clip.video_id == Video.id)
        .where(Video.status == VideoStatus.indexed)
    ).one()
    return int(count), int(largest or 0), int(total or 0)


def ids_fingerprint(ids: np.ndarray) -> Fingerprint:
    """The same fingerprint of the ids an index holds."""
    if len(ids) == 0:
        return 0, 0, 0
    return len(ids), int(ids.max()), int(ids.astype(np.int64).sum())


def fetch_embeddings(session: Session, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) batches for the given clip ids."""
    for begin in range(0, len(ids), FETCH_BATCH):
        chunk = [int(i) for i in ids[begin : begin + FETCH_BATCH]]
        rows = session.execute(select(Clip.id, Clip.embedding).where(Clip.id.in_(chunk))).all()
        if len(rows) != len(chunk):
            raise IndexerError("clips disappeared from the catalog while the index was built: run it again")
        yield (
            np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]),
        )


def embedding_dim(session: Session, clip_id: int) -> int:
    """The dimension of the catalog's embeddings, read off one clip."""
    blob = session.scalars(select(Clip.embedding).where(Clip.id == clip_id)).one()
    return len(blob) // 4


@dataclass(frozen=True)
class StoredClip:
    """A clip of an indexed video with its embedding (search by ``like=``)."""

    clip_id: int
    video_id: int
    path: str
    embedding: bytes  # float32, L2-normalised


def clip_embedding(session: Session, clip_id: int) -> StoredClip | None:
    """The clip's embedding when its video is indexed; None otherwise."""
    row = session.execute(
        select(Clip.id, Clip.video_id, Video.path, Clip.embedding)
        .join(Video, Clip.video_id == Video.id)
        .where(Clip.id == clip_id, Video.status == VideoStatus.indexed)
    ).first()
    return None if row is None else StoredClip(int(row[0]), int(row[1]), str(row[2]), bytes(row[3]))
