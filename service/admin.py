"""Admin operations as plain functions (no HTTP), through the indexer's own code."""

from __future__ import annotations

from indexer.errors import IndexerError
from indexer.queries import get_video
from indexer.records import delete_videos

from .resources import Resources


class UnknownVideo(LookupError):
    """No video with that id (perhaps deleted meanwhile)."""


def delete_from_catalog(resources: Resources, video_id: int) -> str:
    """Delete one video's catalog rows, embeddings and thumbnails (one transaction); returns its path.

    Searches leave its clips out from then on; the index keeps their vectors until ``republish`` runs.
    """
    with resources.read_session() as session:
        video = get_video(session, video_id)
        if video is None:
            raise UnknownVideo(f"no video with id {video_id}")
        path = video.path
    try:
        delete_videos(resources.writer_sessions(), [str(video_id)])
    except IndexerError as exc:  # deleted by someone else since the look-up
        raise UnknownVideo(str(exc)) from None
    return path


async def republish(resources: Resources) -> int | None:
    """Bring the index in line with the catalog (an update, or a rebuild when the type needs one) on a worker
    thread, then serve it; returns the served version."""
    return await resources.sync_job()
