"""``GET /videos/{id}/moments?q=``: where inside one video the words match (service/moments.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from indexer.catalog import VideoStatus
from indexer.queries import ClipVectors, clip_vectors

from ..access import Viewer
from ..deps import IndexDep, ResourcesDep, ViewerDep
from ..errors import ERROR_RESPONSES
from ..moments import best_runs, segments, threshold
from ..resources import Resources
from ..schemas import MAX_QUERY_CHARS, NOT_BLANK, CurvePoint, MomentsResponse, Problem
from .search import calibration_of, moment_out
from .videos import VideoId, visible_video

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such video (or not one this client may see)."},
    409: {"model": Problem, "description": "The video is not indexed, or was indexed with another checkpoint."},
}


def served_clips(resources: Resources, video_id: int, viewer: Viewer) -> ClipVectors:
    """The video's clips and embeddings, if this viewer may see it and the served checkpoint made them."""
    encoder = resources.encoder
    with resources.read_session() as session:
        video = visible_video(session, video_id, resources.settings, viewer)
        if video.status != VideoStatus.indexed:
            raise HTTPException(409, f"video {video_id} is not indexed (its status is {video.status.value})")
        if encoder is not None and video.checkpoint_id != encoder.checkpoint_id:
            raise HTTPException(
                409,
                f"video {video_id} was indexed with checkpoint {video.checkpoint_id}, the service serves "
                f"{encoder.checkpoint_id}: run tvr ingest again to re-encode it",
            )
        return clip_vectors(session, video.id)


@router.get("/videos/{video_id}/moments", response_model=MomentsResponse, responses=RESPONSES)
async def video_moments(
    resources: ResourcesDep,
    index: IndexDep,  # answers 503 until the encoder, catalog and index are loaded
    viewer: ViewerDep,
    video_id: VideoId,
    q: Annotated[
        str,
        Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NOT_BLANK, description="What to look for."),
    ],
) -> MomentsResponse:
    """How well every clip of the video matches the words (``curve``, in time order), and its best moments,
    best first: stretches scoring from halfway between the video's median and its peak, cut at window edges."""
    vector = await resources.queries.text_vector(q)
    clips = await asyncio.to_thread(served_clips, resources, video_id, viewer)
    scores = clips.vectors @ vector if clips.ids else np.empty(0, np.float32)
    calibration = calibration_of(resources)
    spans = segments(clips.windows, scores)
    floor = threshold(spans) if spans else 0.0
    return MomentsResponse(
        video_id=video_id,
        query=q,
        threshold=round(floor, 6),
        curve=[
            CurvePoint(start=start, end=end, score=round(float(score), 6))
            for (start, end), score in zip(clips.windows, scores, strict=True)
        ],
        moments=[moment_out(span, calibration) for span in best_runs(spans, floor)],
    )
