"""The catalog over HTTP: videos (paginated), one video with its clips, video files, clip thumbnails."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from indexer import queries as catalog
from indexer.catalog import Clip, Video, VideoStatus

from .. import catalog_queries as queries
from ..deps import SessionDep, SettingsDep
from ..errors import ERROR_RESPONSES
from ..media import file_response
from ..schemas import MAX_ID, ClipOut, Problem, VideoDetail, VideoOut, VideoPage
from ..urls import media_url, thumbnail_url

router = APIRouter(tags=["catalog"], responses=ERROR_RESPONSES)

VideoId = Annotated[int, Path(ge=1, le=MAX_ID, description="A video id from the catalog.")]
ClipId = Annotated[int, Path(ge=1, le=MAX_ID, description="A clip id (as in search results).")]
NOT_FOUND = {404: {"model": Problem, "description": "No such id in the catalog."}}


def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back the catalog's UTC times without their zone: say it."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def video_out(video: Video, clip_count: int) -> dict[str, object]:
    return {
        "id": video.id,
        "title": video.title,
        "path": video.path,
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


def known_video(session: Session, video_id: int) -> Video:
    video = catalog.get_video(session, video_id)
    if video is None:
        raise HTTPException(404, f"no video with id {video_id}")
    return video


@router.get("/videos", response_model=VideoPage)
def list_videos(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Videos to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200, description="Videos per page.")] = 50,
    status: Annotated[VideoStatus | None, Query(description="Only videos in this state.")] = None,
) -> VideoPage:
    """Catalog videos in id order, one page at a time."""
    videos, total = catalog.list_videos(session, offset=offset, limit=limit, status=status)
    counts = queries.clip_counts(session, [v.id for v in videos])
    return VideoPage(
        total=total,
        offset=offset,
        limit=limit,
        videos=[VideoOut(**video_out(v, counts.get(v.id, 0))) for v in videos],
    )


@router.get("/videos/{video_id}", response_model=VideoDetail, responses=NOT_FOUND)
def get_video(session: SessionDep, video_id: VideoId) -> VideoDetail:
    """One video with its clips."""
    video = known_video(session, video_id)
    clips = queries.clips_of(session, video.id)
    return VideoDetail(
        **video_out(video, len(clips)),
        clips=[
            ClipOut(
                id=c.id,
                position=c.position,
                start=c.start,
                end=c.end,
                thumbnail_url=thumbnail_url(c.id) if c.thumbnail else None,
                media_url=media_url(video.id, c.start, c.end),
            )
            for c in clips
        ],
    )


@router.get(
    "/videos/{video_id}/media",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole file.", "content": {"video/*": {}}},
        206: {"description": "The requested byte range.", "content": {"video/*": {}}},
        416: {"model": Problem, "description": "A malformed or unsatisfiable Range header."},
        **NOT_FOUND,
    },
)
def video_media(session: SessionDep, video_id: VideoId, request: Request) -> StreamingResponse:
    """The video file. A `Range: bytes=FIRST-LAST` header (or `FIRST-`, `-SUFFIX`) gets 206 with those bytes,
    so a player can seek; a malformed or unsatisfiable one gets 416."""
    video = known_video(session, video_id)
    path = FilePath(video.path)  # only a path the catalog holds is ever opened
    if not path.is_file():
        raise HTTPException(404, f"the file of video {video_id} is missing on the server")
    return file_response(path, request.headers.get("range"))


@router.get(
    "/clips/{clip_id}/thumbnail",
    response_class=Response,
    responses={200: {"description": "A JPEG image.", "content": {"image/jpeg": {}}}, **NOT_FOUND},
)
def clip_thumbnail(session: SessionDep, settings: SettingsDep, clip_id: ClipId) -> Response:
    """The clip's thumbnail, a JPEG."""
    clip = session.get(Clip, clip_id)
    if clip is None:
        raise HTTPException(404, f"no clip with id {clip_id}")
    path = catalog.thumbnail_file(settings.thumbnails_dir, clip)  # never a path outside the thumbnails folder
    if path is None:
        raise HTTPException(404, f"clip {clip_id} has no thumbnail file on the server")
    return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})
