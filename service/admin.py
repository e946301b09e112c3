"""Admin operations as plain functions (no HTTP): deleting through the indexer's own code."""

from __future__ import annotations

from indexer.errors import IndexerError
from indexer.queries import get_video
from indexer.records import delete_videos
from indexer.store import IndexMeta
from indexer.sync import sync_index

from .resources import Resources


class UnknownVideo(LookupError):
    """No video with that id (perhaps deleted meanwhile)."""


def delete_video(resources: Resources, video_id: int) -> tuple[str, IndexMeta | None]:
    """Delete one video (catalog rows, embeddings, thumbnails) and publish an index without its clips.

    Returns (the video's path, the published index metadata or None when nothing is published).
    """
    with resources.read_session() as session:
        video = get_video(session, video_id)
        if video is None:
            raise UnknownVideo(f"no video with id {video_id}")
        path = video.path
    settings = resources.settings
    try:
        delete_videos(resources.writer_sessions(), settings.thumbnails_dir, [str(video_id)])
    except IndexerError as exc:  # deleted by someone else since the look-up
        raise UnknownVideo(str(exc)) from None
    meta = sync_index(resources.sessions, settings.index_dir)  # type: ignore[arg-type]
    return path, meta
