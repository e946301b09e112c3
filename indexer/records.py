"""Catalog writes: one transaction per video (its row, clips, embeddings and thumbnails together), deletes.

Thumbnails are catalog rows (``ClipThumbnail``), not files, so every API replica serves what any ingester
made; clip rows are deleted by statement and their thumbnails follow by ``ON DELETE CASCADE`` (SQLite
connections turn foreign keys on, ``db.make_engine``). The tracks of a video's embedded subtitle streams go
with its clips (replaced by ``record_indexed``, dropped by ``record_failed``); its subtitle files' tracks are
``subtitle_store``'s. Deleting a video deletes all its tracks and segments by cascade.

Concurrent ingesters (several machines on one PostgreSQL catalog, or two runs on one SQLite file) are safe:
a video's row is locked (``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``) before its clips are
replaced, and a second insert of the same path fails on the unique constraint and is retried as an update.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .catalog import Clip, ClipThumbnail, Video, VideoStatus, utcnow
from .db import session_scope
from .decode import Probed
from .errors import IndexerError
from .subtitle_store import drop_embedded_tracks, replace_embedded_tracks
from .subtitles import SubtitleTally, Track

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class Description:
    """What a run says of a video besides its file: a manifest's title and metadata (merged into the row's),
    and its collection (None keeps the row's; a new row's is ``default``)."""

    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    collection: str | None = None


@dataclass
class EncodedVideo:
    """A video ready to commit: what the worker found and the encoder's vectors, one per window."""

    probed: Probed
    title: str | None
    metadata: dict[str, Any]
    embeddings: np.ndarray  # float32 (clips, E)
    thumbnails: list[bytes]
    checkpoint_id: str
    collection: str | None = None  # None: where the row is (a new row: ``default``)
    text_tracks: list[Track] | None = None  # its embedded text subtitle streams; None: not read, kept as stored


def record_indexed(
    sessions: sessionmaker[Session], item: EncodedVideo, subtitles: SubtitleTally | None = None
) -> Literal["indexed", "unchanged"]:
    """Commit a video with its clips and their thumbnails, replacing any earlier clips (their thumbnails go
    with them) and, when ``item.text_tracks`` were read, its embedded subtitle tracks (counted in
    ``subtitles`` once committed); ``unchanged`` when another ingester committed this very content with this
    checkpoint meanwhile."""
    probed = item.probed
    for attempt in range(CONFLICT_RETRIES):
        changes = None
        try:
            with session_scope(sessions) as session:
                video = _locked_video(session, probed.path)
                if (
                    video is not None
                    and video.status == VideoStatus.indexed
                    and video.content_hash == probed.content_hash
                    and video.checkpoint_id == item.checkpoint_id
                ):
                    describe(video, Description(item.title, item.metadata, item.collection))
                    return "unchanged"
                if video is None:
                    video = Video(path=probed.path, meta={}, attempts=0)
                    session.add(video)
                    session.flush()  # the clips need its id; raises on a concurrent insert
                else:
                    session.execute(delete(Clip).where(Clip.video_id == video.id))
                _set_file_facts(video, probed)
                describe(video, Description(item.title, item.metadata, item.collection))
                video.status, video.error = VideoStatus.indexed, None
                video.checkpoint_id, video.indexed_at = item.checkpoint_id, utcnow()
                video.attempts = (video.attempts or 0) + 1
                clips = [
                    Clip(
                        video_id=video.id,
                        position=position,
                        start=float(start),
                        end=float(end),
                        embedding=np.asarray(vector, dtype=np.float32).tobytes(),
                    )
                    for position, ((start, end), vector) in enumerate(zip(probed.windows, item.embeddings, strict=True))
                ]
                session.add_all(clips)
                session.flush()  # the thumbnails need the clips' ids
                session.add_all(
                    ClipThumbnail(clip_id=clip.id, jpeg=jpeg)
                    for clip, jpeg in zip(clips, item.thumbnails, strict=True)
                    if jpeg  # a clip whose frame could not be made into a JPEG has none
                )
                if item.text_tracks is not None:
                    changes = replace_embedded_tracks(session, video.id, item.text_tracks)
        except IntegrityError:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            log.debug("%s: inserted concurrently by another ingester; retrying as an update", probed.path)
            continue
        if subtitles is not None and changes is not None:
            subtitles.merge(changes)
        return "indexed"
    raise AssertionError("unreachable")


def record_failed(
    sessions: sessionmaker[Session],
    path: str,
    error: str,
    probed: Probed | None = None,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
    collection: str | None = None,
) -> None:
    """Mark a video failed with its reason and drop any clips and embedded subtitle tracks it had (they
    describe other content)."""
    for attempt in range(CONFLICT_RETRIES):
        try:
            with session_scope(sessions) as session:
                video = _locked_video(session, path)
                if video is None:
                    video = Video(path=path, meta={}, attempts=0)
                    session.add(video)
                    session.flush()
                else:
                    session.execute(delete(Clip).where(Clip.video_id == video.id))
                    drop_embedded_tracks(session, video.id)
                if probed is not None:
                    _set_file_facts(video, probed)
                describe(video, Description(title, metadata or {}, collection))
                video.status, video.error = VideoStatus.failed, error
                video.checkpoint_id, video.indexed_at = None, None
                video.attempts = (video.attempts or 0) + 1
        except IntegrityError:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            continue
        return


def record_unchanged(sessions: sessionmaker[Session], probed: Probed, description: Description | None = None) -> bool:
    """The file was touched but its bytes are the same: remember the new size/mtime so the next run skips it
    without hashing, and apply ``description``. True when that moved it to another collection."""
    with session_scope(sessions) as session:
        video = _locked_video(session, probed.path)
        if video is None:
            return False
        video.size, video.mtime_ns = probed.size, probed.mtime_ns
        return describe(video, description or Description())


def update_descriptions(sessions: sessionmaker[Session], items: Sequence[tuple[int, Description]]) -> int:
    """New titles, metadata or collections for videos that are otherwise unchanged (video id, description):
    one transaction; returns how many moved to another collection. Each changed row's ``updated_at`` moves
    on, which is how a server notices."""
    if not items:
        return 0
    moved = 0
    with session_scope(sessions) as session:
        for video_id, description in items:
            video = session.get(Video, video_id)
            if video is not None:
                moved += describe(video, description)
    return moved


def describe(video: Video, description: Description) -> bool:
    """Apply ``description`` to a catalog row; True when it moves the row to another collection."""
    if description.title is not None:
        video.title = description.title
    if description.metadata:
        video.meta = {**(video.meta or {}), **description.metadata}
    moved = description.collection is not None and description.collection != video.collection
    if description.collection is not None:
        video.collection = description.collection
    return moved


def _locked_video(session: Session, path: str) -> Video | None:
    return session.scalars(select(Video).where(Video.path == path).with_for_update()).one_or_none()


def _set_file_facts(video: Video, probed: Probed) -> None:
    video.content_hash = probed.content_hash
    video.size, video.mtime_ns = probed.size, probed.mtime_ns
    if probed.status == "ok" or probed.duration:
        video.duration, video.fps, video.codec = probed.duration, probed.fps, probed.codec or None
        video.width, video.height = probed.width or None, probed.height or None
        video.decoder = probed.decoder or None


# --- deleting ------------------------------------------------------------------------------------------------


def find_videos(session: Session, refs: Sequence[str]) -> tuple[list[Video], list[str]]:
    """Videos named by id or path (as given, or resolved); returns (found, refs matching nothing)."""
    found: dict[int, Video] = {}
    missing: list[str] = []
    for ref in refs:
        video = None
        if ref.isdigit():
            video = session.get(Video, int(ref))
        if video is None:
            candidates = {ref, str(Path(ref).expanduser().resolve())}
            video = session.scalars(select(Video).where(Video.path.in_(candidates))).first()
        if video is None:
            missing.append(ref)
        else:
            found[video.id] = video
    return list(found.values()), missing


def delete_videos(sessions: sessionmaker[Session], refs: Sequence[str]) -> list[Video]:
    """Delete videos (by id or path) with their clips, embeddings, thumbnails and subtitle tracks; all or
    nothing.

    Raises ``IndexerError`` naming every reference that matches no video (nothing is deleted then).
    The caller republishes the index (``sync.sync_index``).
    """
    with session_scope(sessions) as session:
        videos, missing = find_videos(session, refs)
        if missing:
            raise IndexerError(f"no such video: {', '.join(missing)} (give a video id or its path)")
        delete_where(session, Video.id.in_([v.id for v in videos]))
    return videos


def delete_where(session: Session, condition: ColumnElement[bool]) -> None:
    """Delete the videos matching ``condition`` (on ``Video`` columns) with their clips, embeddings,
    thumbnails and subtitle tracks, in the caller's transaction. The caller republishes the index
    (``sync.sync_index``)."""
    session.execute(delete(Clip).where(Clip.video_id.in_(select(Video.id).where(condition))))
    session.execute(delete(Video).where(condition))  # thumbnails, subtitle tracks and segments cascade
