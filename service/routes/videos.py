"""The catalog over HTTP: videos (paginated), one video with its clips, video files, clip thumbnails.

Anyone who may read sees indexed videos inside the media roots; failed and pending entries (their paths
and error texts) only a request with the admin key. Files are served for indexed videos only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from indexer import queries
from indexer.catalog import TextTrack, Video, VideoStatus

from ..access import Viewer, inside_roots, servable_file, shown_path
from ..deps import SessionDep, SettingsDep, ViewerDep
from ..errors import ERROR_RESPONSES
from ..media import file_response
from ..schemas import MAX_ID, ClipOut, Problem, TextTrackOut, VideoDetail, VideoOut, VideoPage
from ..settings import ServiceSettings
from ..thumbnails import jpeg_response, thumbnail_jpeg
from ..urls import media_url, thumbnail_url

router = APIRouter(tags=["catalog"], responses=ERROR_RESPONSES)

VideoId = Annotated[int, Path(ge=1, le=MAX_ID, description="A video id from the catalog.")]
ClipId = Annotated[int, Path(ge=1, le=MAX_ID, description="A clip id (as in search results).")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such id in the catalog."}}


def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back the catalog's UTC times without their zone: say it."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def video_out(video: Video, clip_count: int, settings: ServiceSettings, viewer: Viewer) -> dict[str, object]:
    return {
        "id": video.id,
        "title": video.title,
        "path": shown_path(video.path, settings.media_roots, viewer),
        "status": video.status.value,
        "error": video.error,
        "duration": video.duration,
        "fps": video.fps,
        "width": video.width,
        "height": video.height,
        "codec": video.codec,
        "size": video.size,
        "clip_count": clip_count,
        "media_url": media_url(video.id),
        "created_at": utc(video.created_at),
        "indexed_at": utc(video.indexed_at),
    }


def visible_video(session: Session, video_id: int, settings: ServiceSettings, viewer: Viewer) -> Video:
    """The video, if this viewer may see it: any for the admin, else indexed ones inside the media roots."""
    video = queries.get_video(session, video_id)
    if video is None or not (
        viewer.admin or (video.status == VideoStatus.indexed and inside_roots(video.path, settings.media_roots))
    ):
        raise HTTPException(404, f"no video with id {video_id}")
    return video


@router.get(
    "/videos",
    response_model=VideoPage,
    responses={401: {"model": Problem, "description": "Videos that are not indexed need the admin key."}},
)
def list_videos(
    session: SessionDep,
    settings: SettingsDep,
    viewer: ViewerDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Videos to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200, description="Videos per page.")] = 50,
    status: Annotated[
        VideoStatus | None,
        Query(description="Only videos in this state (default: indexed; others need the admin key)."),
    ] = None,
) -> VideoPage:
    """Catalog videos in id order, one page at a time."""
    if not viewer.admin:
        if status not in (None, VideoStatus.indexed):
            raise HTTPException(
                401,
                f"listing {status.value} videos needs the admin key (X-API-Key)",
                headers={"WWW-Authenticate": "X-API-Key"},
            )
        status = VideoStatus.indexed
    inside = None if viewer.admin or not settings.media_roots else settings.media_roots
    videos, total = queries.list_videos(session, offset=offset, limit=limit, status=status, inside=inside)
    counts = queries.clip_counts(session, [v.id for v in videos])
    return VideoPage(
        total=total,
        offset=offset,
        limit=limit,
        videos=[VideoOut(**video_out(v, counts.get(v.id, 0), settings, viewer)) for v in videos],
    )


@router.get("/videos/{video_id}", response_model=VideoDetail, responses=NOT_FOUND)
def get_video(session: SessionDep, settings: SettingsDep, viewer: ViewerDep, video_id: VideoId) -> VideoDetail:
    """One video with its clips and its subtitle tracks."""
    video = visible_video(session, video_id, settings, viewer)
    clips = queries.clips_of(session, video.id)
    stored = queries.clips_with_thumbnails(session, video.id)
    tracks = queries.text_tracks_of(session, video.id)
    return VideoDetail(
        **video_out(video, len(clips), settings, viewer),
        clips=[
            ClipOut(
                id=c.id,
                position=c.position,
                start=c.start,
                end=c.end,
                thumbnail_url=thumbnail_url(c.id) if c.id in stored or c.thumbnail else None,
                media_url=media_url(video.id, c.start, c.end),
            )
            for c in clips
        ],
        subtitles=[track_out(track, settings, viewer) for track in tracks],
    )


def track_out(track: TextTrack, settings: ServiceSettings, viewer: Viewer) -> TextTrackOut:
    """A track as ``viewer`` may see it: a file's path shown as video paths are, in its error too."""
    source = track.source
    if not source.startswith("stream:"):
        source = shown_path(track.source, settings.media_roots, viewer)
    error = track.error.replace(track.source, source) if track.error else None
    status = cast(Literal["ok", "failed"], track.status)
    return TextTrackOut(source=source, language=track.language, status=status, error=error, segments=track.segments)


@router.get(
    "/videos/{video_id}/media",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole file.", "content": {"video/*": {}}},
        206: {"description": "The requested byte range.", "content": {"video/*": {}}},
        416: {"model": Problem, "description": "A malformed or unsatisfiable byte range."},
        **NOT_FOUND,
    },
)
def video_media(session: SessionDep, settings: SettingsDep, video_id: VideoId, request: Request) -> StreamingResponse:
    """The video file. A `Range: bytes=FIRST-LAST` header (or `FIRST-`, `-SUFFIX`) gets 206 with those bytes,
    so a player can seek; a malformed or unsatisfiable byte range gets 416, another unit the whole file."""
    video = queries.get_video(session, video_id)
    path = servable_file(video.path, video.status, settings.media_roots) if video is not None else None
    if path is None:  # only files of indexed videos, inside the media roots, are ever opened
        raise HTTPException(404, f"no video with id {video_id}")
    return file_response(path, request.headers.get("range"))


@router.get(
    "/clips/{clip_id}/thumbnail",
    response_class=Response,
    responses={
        200: {"description": "A JPEG image.", "content": {"image/jpeg": {}}},
        304: {"description": "Not modified: the `If-None-Match` header names this thumbnail's ETag."},
        **NOT_FOUND,
    },
)
def clip_thumbnail(
    session: SessionDep,
    settings: SettingsDep,
    clip_id: ClipId,
    if_none_match: Annotated[
        str | None, Header(max_length=1024, description="ETags of copies the client holds: 304 if one is this.")
    ] = None,
) -> Response:
    """The clip's thumbnail, a JPEG. It never changes (re-indexing gives clips new ids), so it may be cached
    for good; its ETag is a hash of its bytes."""
    clip = queries.get_clip(session, clip_id)
    if clip is None:
        raise HTTPException(404, f"no clip with id {clip_id}")
    video = queries.get_video(session, clip.video_id)
    if video is None or video.status != VideoStatus.indexed or not inside_roots(video.path, settings.media_roots):
        raise HTTPException(404, f"no clip with id {clip_id}")
    jpeg = thumbnail_jpeg(session, clip, settings)
    if jpeg is None:
        raise HTTPException(404, f"clip {clip_id} has no thumbnail")
    return jpeg_response(jpeg, if_none_match, private=settings.read_api_key is not None)
