"""Named collections: every video belongs to one (``Video.collection``, ``default`` unless told otherwise).

The one home of the naming rule, and of the catalog operations on whole collections: statistics per
collection, renaming and deleting. Moving one video happens by ingesting it into another collection
(``records.describe``). Deleting removes the videos the way ``tvr delete`` does (``records.delete_where``);
the caller republishes the index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .catalog import Clip, Video, VideoStatus, utcnow
from .db import session_scope
from .errors import CollectionError
from .queries import under_any
from .records import delete_where

DEFAULT_COLLECTION = "default"
NAME_RULE = "[a-z0-9][a-z0-9_-]{0,63}"
COLLECTION_NAME = re.compile(NAME_RULE)


def check_collection_name(name: str, where: str) -> str:
    """``name`` if it is a valid collection name; else ``CollectionError`` naming the value, ``where`` it
    came from (an option, a manifest line) and the rule."""
    if not isinstance(name, str) or COLLECTION_NAME.fullmatch(name) is None:
        raise CollectionError(
            f"{where}: {name!r} is not a collection name: expected 1 to 64 characters of a-z, 0-9, '_' and '-', "
            f"the first a letter or digit ({NAME_RULE})"
        )
    return name


def no_such_collection(where: str, name: str) -> CollectionError:
    return CollectionError(f"{where}: no collection named {name!r} (`tvr collection list` shows them)")


@dataclass(frozen=True)
class CollectionStats:
    """One collection's indexed videos, their clips and hours, and its entries that are not indexed."""

    name: str
    videos: int  # indexed videos
    clips: int  # clips of those videos
    hours: float  # their duration
    not_indexed: int = 0  # failed or pending entries


def collection_stats(
    session: Session, *, inside: Sequence[Path] | None = None, indexed_only: bool = False
) -> list[CollectionStats]:
    """Every collection, by name; with ``inside``, counting only files inside those folders (as
    ``queries.list_videos`` takes them); with ``indexed_only``, only collections holding indexed videos."""
    indexed = Video.status == VideoStatus.indexed
    per_video = select(
        Video.collection,
        func.sum(case((indexed, 1), else_=0)),
        func.sum(case((indexed, func.coalesce(Video.duration, 0.0)), else_=0.0)),
        func.sum(case((indexed, 0), else_=1)),
    ).group_by(Video.collection)
    per_clip = select(Video.collection, func.count(Clip.id)).join(Clip, Clip.video_id == Video.id).where(indexed)
    if inside is not None:
        per_video, per_clip = per_video.where(under_any(inside)), per_clip.where(under_any(inside))
    if indexed_only:
        per_video = per_video.where(indexed)
    clips = {name: int(count) for name, count in session.execute(per_clip.group_by(Video.collection))}
    return [
        CollectionStats(name, int(videos or 0), clips.get(name, 0), float(seconds or 0.0) / 3600, int(other or 0))
        for name, videos, seconds, other in sorted(session.execute(per_video).all())
    ]


def video_counts(session: Session, names: Sequence[str]) -> dict[str, int]:
    """Catalog entries (any status) of each of ``names`` that has any."""
    rows = session.execute(
        select(Video.collection, func.count()).where(Video.collection.in_(list(names))).group_by(Video.collection)
    )
    return {name: int(count) for name, count in rows}


def rename_collection(sessions: sessionmaker[Session], old: str, new: str) -> int:
    """Move every video of ``old`` to ``new`` in one transaction, refusing a ``new`` that already holds
    videos; returns how many moved. Their ``updated_at`` moves on (how a server notices)."""
    check_collection_name(old, "rename: OLD")
    check_collection_name(new, "rename: NEW")
    if old == new:
        raise CollectionError(f"rename: {old!r} to itself: give another name")
    with session_scope(sessions) as session:
        counts = video_counts(session, [old, new])
        if old not in counts:
            raise no_such_collection("rename", old)
        if new in counts:
            raise CollectionError(
                f"rename: collection {new!r} already exists ({counts[new]} videos): choose another name, or "
                f"delete it first (`tvr collection delete {new}`)"
            )
        session.execute(
            update(Video).where(Video.collection == old).values(collection=new, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
    return counts[old]


def delete_collection(sessions: sessionmaker[Session], name: str) -> int:
    """Delete every video of collection ``name`` (any status) with its clips, embeddings and thumbnails, in
    one transaction; returns how many. The caller republishes the index (``sync.sync_index``)."""
    check_collection_name(name, "delete")
    with session_scope(sessions) as session:
        count = video_counts(session, [name]).get(name, 0)
        if not count:
            raise no_such_collection("delete", name)
        delete_where(session, Video.collection == name)
    return count
