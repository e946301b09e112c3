"""Catalog writes of subtitle tracks (``TextTrack``) and their segments (``TextSegment``).

Files: every run brings the file tracks of each discovered video up to date (``sync_file_tracks``), whether or
not the video itself was re-indexed: a new or changed file (by the sha256 of its bytes) is parsed and written,
an unchanged one is left alone, and the track of a file that is gone is deleted. A file stays a video's track
once it was found beside the video or named by a manifest, as long as it exists, so a later run without the
manifest keeps it. A video gets file tracks only once it has a catalog row (indexed or failed: search shows
indexed videos only, and a repaired video has its subtitles at once).

Embedded streams: read again only when the video's content is indexed anew, and written in the same
transaction as its clips (``records.record_indexed``, through ``replace_embedded_tracks``); a video recorded
as failed loses them with its clips.

Each video's changes are one transaction with its row locked (``SELECT ... FOR UPDATE``; SQLite's ``BEGIN
IMMEDIATE``), a track always with its segments, so an interrupted run leaves whole tracks and concurrent
ingesters one track per source (``uq_text_tracks_video_id_source``). Deleting a video deletes its tracks and
segments by ``ON DELETE CASCADE``, and the full-text index follows (migration 0006).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from .catalog import TextSegment, TextTrack, Video
from .db import read_snapshot, session_scope
from .subtitles import (
    EMBEDDED_PREFIX,
    SidecarFinder,
    SubtitleError,
    SubtitleTally,
    Track,
    fingerprint,
    language_of,
    read_bytes,
    track_of_bytes,
)

if TYPE_CHECKING:  # not at run time: sources -> collections -> records -> subtitle_store is a cycle
    from .sources import Source

log = logging.getLogger(__name__)

IN_CHUNK = 900  # videos per catalog read: below SQLite's oldest limit of 999 bound parameters


@dataclass(frozen=True)
class _Stored:
    """What the catalog holds of a file track: enough to tell whether the file changed."""

    language: str | None
    fingerprint: str | None
    error: str | None


@dataclass
class _Update:
    """One video's file tracks to write (new or changed files) and sources to delete (files gone)."""

    write: list[Track] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


# --- files -------------------------------------------------------------------------------------------------


def sync_file_tracks(
    reads: sessionmaker[Session], writes: sessionmaker[Session], sources: Sequence[Source], tally: SubtitleTally
) -> None:
    """Bring the file tracks of ``sources``' videos up to date with their subtitle files (beside the video,
    named by the manifest, or stored before and still there), counting what changed in ``tally``."""
    finder = SidecarFinder()
    for begin in range(0, len(sources), IN_CHUNK):
        chunk = sources[begin : begin + IN_CHUNK]
        with read_snapshot(reads) as session:
            ids = _video_ids(session, [str(s.path) for s in chunk])
            stored = _stored_file_tracks(session, list(ids.values()))
        for source in chunk:
            video_id = ids.get(str(source.path))
            if video_id is None:
                continue  # not recorded (a run interrupted before it): the next run sees to it
            wanted = _wanted_files(source, finder, stored.get(video_id, {}))
            update = _file_update(wanted, stored.get(video_id, {}), tally)
            if update.write or update.remove:
                _apply(writes, video_id, update, tally)


def _wanted_files(source: Source, finder: SidecarFinder, stored: dict[str, _Stored]) -> dict[Path, str | None]:
    """The subtitle files of a video (path -> language), each once: beside it, named for it (paths made
    absolute by the manifest's reader), or stored and still there."""
    wanted = finder.find(source.path)
    for path in source.subtitles:
        wanted.setdefault(path, language_of(path))
    for name in stored:
        if Path(name).exists():
            wanted.setdefault(Path(name), language_of(Path(name)))
    return wanted


def _file_update(wanted: dict[Path, str | None], stored: dict[str, _Stored], tally: SubtitleTally) -> _Update:
    """Which files need their track written and which stored tracks lost their file; unchanged tracks are
    counted in ``tally`` (failed ones listed again)."""
    update = _Update(remove=[name for name in stored if Path(name) not in wanted])
    for path, language in wanted.items():
        old = stored.get(str(path))
        track = _changed_track(path, language, old)
        if track is None:
            assert old is not None
            _count_unchanged(str(path), old, tally)
        else:
            update.write.append(track)
    return update


def _changed_track(path: Path, language: str | None, old: _Stored | None) -> Track | None:
    """The file's track when it differs from the stored one (parsed only then); None when unchanged."""
    try:
        data = read_bytes(path)
    except SubtitleError as exc:  # a named file that is missing, say: a failed track
        track = Track(str(path), language, None, error=str(exc))
        return None if old == _Stored(language, None, track.error) else track
    if old is not None and (old.language, old.fingerprint) == (language, fingerprint(data)):
        return None
    return track_of_bytes(path, language, data)


def _count_unchanged(source: str, old: _Stored, tally: SubtitleTally) -> None:
    tally.unchanged += 1
    if old.error is not None:
        tally.failed.append((source, old.error))


def _apply(writes: sessionmaker[Session], video_id: int, update: _Update, tally: SubtitleTally) -> None:
    """One video's file track changes in one transaction, its row locked; counted once committed."""
    with session_scope(writes) as session:
        if session.scalars(select(Video.id).where(Video.id == video_id).with_for_update()).first() is None:
            return  # deleted meanwhile
        sources = [track.source for track in update.write] + update.remove
        existing = _track_ids(session, video_id, sources)
        _delete_tracks(session, list(existing.values()))
        for track in update.write:
            _insert_track(session, video_id, track)
    _count_written(update.write, existing, tally)
    tally.removed += sum(source in existing for source in update.remove)


# --- embedded streams -------------------------------------------------------------------------------------------


def replace_embedded_tracks(session: Session, video_id: int, tracks: Sequence[Track]) -> SubtitleTally:
    """Replace a video's embedded-stream tracks with ``tracks``, in the caller's transaction (the video's row
    locked by it); returns what changed."""
    existing = {
        source: track_id
        for track_id, source in session.execute(
            select(TextTrack.id, TextTrack.source).where(
                TextTrack.video_id == video_id, TextTrack.source.startswith(EMBEDDED_PREFIX)
            )
        )
    }
    _delete_tracks(session, list(existing.values()))
    for track in tracks:
        _insert_track(session, video_id, track)
    changes = SubtitleTally()
    _count_written(tracks, existing, changes)
    changes.removed = len(set(existing) - {track.source for track in tracks})
    return changes


def drop_embedded_tracks(session: Session, video_id: int) -> None:
    """Delete a video's embedded-stream tracks (their content is gone), in the caller's transaction."""
    ids = session.scalars(
        select(TextTrack.id).where(TextTrack.video_id == video_id, TextTrack.source.startswith(EMBEDDED_PREFIX))
    ).all()
    _delete_tracks(session, list(ids))


# --- rows -------------------------------------------------------------------------------------------------------


def _video_ids(session: Session, paths: list[str]) -> dict[str, int]:
    return {
        path: video_id for video_id, path in session.execute(select(Video.id, Video.path).where(Video.path.in_(paths)))
    }


def _stored_file_tracks(session: Session, video_ids: list[int]) -> dict[int, dict[str, _Stored]]:
    found: dict[int, dict[str, _Stored]] = {}
    rows = session.execute(
        select(TextTrack.video_id, TextTrack.source, TextTrack.language, TextTrack.fingerprint, TextTrack.error).where(
            TextTrack.video_id.in_(video_ids), ~TextTrack.source.startswith(EMBEDDED_PREFIX)
        )
    )
    for video_id, source, language, digest, error in rows:
        found.setdefault(video_id, {})[source] = _Stored(language, digest, error)
    return found


def _track_ids(session: Session, video_id: int, sources: list[str]) -> dict[str, int]:
    rows = session.execute(
        select(TextTrack.source, TextTrack.id).where(TextTrack.video_id == video_id, TextTrack.source.in_(sources))
    )
    return {source: track_id for source, track_id in rows}


def _delete_tracks(session: Session, track_ids: list[int]) -> None:
    if track_ids:
        session.execute(delete(TextSegment).where(TextSegment.track_id.in_(track_ids)))
        session.execute(delete(TextTrack).where(TextTrack.id.in_(track_ids)))


def _insert_track(session: Session, video_id: int, track: Track) -> None:
    """A track's row and its segments (none when it failed)."""
    cues = [] if track.error is not None else track.cues
    row = TextTrack(
        video_id=video_id,
        source=track.source,
        language=track.language,
        status=track.status,
        error=track.error,
        fingerprint=track.fingerprint,
        segments=len(cues),
    )
    session.add(row)
    session.flush()  # the segments need its id
    if cues:
        session.execute(
            insert(TextSegment),
            [
                {"video_id": video_id, "track_id": row.id, "start": cue.start, "end": cue.end, "text": cue.text}
                for cue in cues
            ],
        )


def _count_written(tracks: Sequence[Track], existing: dict[str, int], tally: SubtitleTally) -> None:
    for track in tracks:
        if track.source in existing:
            tally.updated += 1
        else:
            tally.added += 1
        if track.error is not None:
            tally.failed.append((track.source, track.error))
