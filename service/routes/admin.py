"""Admin routes, behind ``X-API-Key``: swap in the newest index, delete a video."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from indexer.errors import IndexerError

from ..admin import UnknownVideo, delete_video
from ..deps import AdminDep, ResourcesDep
from ..errors import ERROR_RESPONSES
from ..resources import CheckpointMismatch
from ..schemas import DeleteResponse, Problem, ReloadResponse
from .videos import VideoId

log = logging.getLogger(__name__)

ADMIN_RESPONSES: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    401: {"model": Problem, "description": "Missing or wrong X-API-Key."},
    403: {"model": Problem, "description": "Admin routes are disabled (TVR_API_KEY is unset)."},
}
router = APIRouter(tags=["admin"], responses=ADMIN_RESPONSES)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={409: {"model": Problem, "description": "The newest index cannot be served (checkpoint, files)."}},
)
async def reload_index(_: AdminDep, resources: ResourcesDep) -> ReloadResponse:
    """Swap in the newest published index; requests in flight finish on the old one."""
    try:
        outcome = await resources.reload()
    except (CheckpointMismatch, IndexerError) as exc:
        raise HTTPException(409, f"kept the served index: {exc}") from None
    return ReloadResponse(
        reloaded=outcome.reloaded, version=outcome.version, previous=outcome.previous, vectors=outcome.vectors
    )


@router.delete(
    "/videos/{video_id}",
    response_model=DeleteResponse,
    responses={404: {"model": Problem, "description": "No such video."}},
)
async def delete_video_route(_: AdminDep, resources: ResourcesDep, video_id: VideoId) -> DeleteResponse:
    """Delete a video with its clips and thumbnails, republish the index and serve it."""
    resources.require_ready()
    async with resources.admin_lock:  # one delete-and-republish at a time
        try:
            path, meta = await run_in_threadpool(delete_video, resources, video_id)
        except UnknownVideo as exc:
            raise HTTPException(404, str(exc)) from None
        if meta is not None:
            try:
                await resources.reload()
            except (CheckpointMismatch, IndexerError) as exc:  # deleted, but the new index is not served
                log.error("video %d deleted but the new index could not be served: %s", video_id, exc)
    log.info("deleted video %d (%s)", video_id, path)
    served = resources.index
    return DeleteResponse(
        deleted=video_id,
        path=path,
        index_version=served.meta.version if served is not None else None,
        vectors=int(served.index.ntotal) if served is not None else None,
    )
