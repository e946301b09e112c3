"""Admin routes, behind ``X-API-Key``: swap in the newest index, delete a video, follow a background job."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.concurrency import run_in_threadpool

from indexer.errors import IndexerError

from ..admin import UnknownVideo, delete_from_catalog, republish
from ..deps import AdminDep, ResourcesDep
from ..errors import ERROR_RESPONSES
from ..index_state import CheckpointMismatch
from ..schemas import DeleteAccepted, JobOut, Problem, ReloadResponse
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
    responses={
        409: {"model": Problem, "description": "The index cannot follow the catalog or be served (checkpoint, files)."}
    },
)
async def reload_index(_: AdminDep, resources: ResourcesDep) -> ReloadResponse:
    """Bring this server's index in line with the catalog (publishing a new version when they differ), then
    swap in the newest published index; requests in flight finish on the old one."""
    try:
        outcome = await resources.reload()
    except (CheckpointMismatch, IndexerError) as exc:
        raise HTTPException(409, f"kept the served index: {exc}") from None
    return ReloadResponse(
        reloaded=outcome.reloaded, version=outcome.version, previous=outcome.previous, vectors=outcome.vectors
    )


@router.delete(
    "/videos/{video_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeleteAccepted,
    responses={404: {"model": Problem, "description": "No such video."}},
)
async def delete_video(_: AdminDep, resources: ResourcesDep, video_id: VideoId) -> DeleteAccepted:
    """Delete a video with its clips and thumbnails. The answer comes once the catalog change is committed
    (searches leave the video out from then on); the index is republished by a background job."""
    resources.require_ready()
    try:
        path = await run_in_threadpool(delete_from_catalog, resources, video_id)
    except UnknownVideo as exc:
        raise HTTPException(404, str(exc)) from None
    job = resources.jobs.submit("republish", lambda: republish(resources))
    log.info("deleted video %d (%s); index job %s", video_id, path, job.id)
    return DeleteAccepted(deleted=video_id, path=path, job_id=job.id)


@router.get(
    "/admin/jobs/{job_id}", response_model=JobOut, responses={404: {"model": Problem, "description": "No such job."}}
)
async def get_job(
    _: AdminDep,
    resources: ResourcesDep,
    job_id: Annotated[str, Path(min_length=1, max_length=64, description="A job id from an admin answer.")],
) -> JobOut:
    """A background job: `queued`, `running`, `succeeded` (with the index version it served) or `failed`."""
    job = resources.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id} (jobs are kept in memory, newest first, until a restart)")
    return JobOut(
        id=job.id,
        kind=job.kind,
        state=job.state.value,
        error=job.error,
        index_version=job.index_version,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )
