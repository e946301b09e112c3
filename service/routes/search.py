"""``GET /search`` and ``POST /search``: text in, ranked clips out."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query

from indexer.store import PublishedIndex

from .. import search as engine
from ..access import Viewer, shown_path
from ..deps import IndexDep, ResourcesDep, ViewerDep
from ..errors import ERROR_RESPONSES
from ..resources import Resources
from ..schemas import (
    MAX_EF_SEARCH,
    MAX_K,
    MAX_NPROBE,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    NOT_BLANK,
    GroupBy,
    MultiSearchResponse,
    Problem,
    SearchHit,
    SearchRequest,
    SearchResponse,
    VideoRef,
)
from ..urls import media_url, thumbnail_url

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)


def to_response(
    query: str, took_ms: float, result: engine.SearchResult, media_roots: list[Path], viewer: Viewer
) -> SearchResponse:
    return SearchResponse(
        query=query,
        took_ms=round(took_ms, 3),
        total=result.total,
        results=[
            SearchHit(
                rank=hit.rank,
                score=round(hit.score, 6),
                clip_id=hit.clip.clip_id,
                video_id=hit.clip.video_id,
                video=VideoRef(
                    id=hit.clip.video_id,
                    title=hit.clip.title,
                    path=shown_path(hit.clip.path, media_roots, viewer),
                    duration=hit.clip.duration,
                ),
                start=hit.clip.start,
                end=hit.clip.end,
                thumbnail_url=thumbnail_url(hit.clip.clip_id),
                media_url=media_url(hit.clip.video_id, hit.clip.start, hit.clip.end),
            )
            for hit in result.hits
        ],
    )


async def run_search(
    resources: Resources, index: PublishedIndex, queries: list[str], options: engine.SearchOptions
) -> tuple[list[engine.SearchResult], float]:
    """Answered with concurrent requests' queries in one batch (service/batching.py); and the time it took."""
    started = time.perf_counter()
    settings = resources.settings
    options = replace(
        options,
        nprobe=options.nprobe if options.nprobe is not None else settings.nprobe,
        ef_search=options.ef_search if options.ef_search is not None else settings.ef_search,
    )
    results = await resources.queries.search(queries, options, index)
    return results, (time.perf_counter() - started) * 1000


@router.get("/search", response_model=SearchResponse)
async def search_get(
    resources: ResourcesDep,
    index: IndexDep,
    viewer: ViewerDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            pattern=NOT_BLANK,
            description="What to look for, in words.",
            examples=["a red circle moves to the right"],
        ),
    ],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Results per page.")] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Results to skip (pagination).")] = 0,
    group_by: Annotated[GroupBy | None, Query(description="'video': only the best clip of each video.")] = None,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0, description="Drop results scoring below.")] = None,
    nprobe: Annotated[int | None, Query(ge=1, le=MAX_NPROBE, description="IVF lists to visit.")] = None,
    ef_search: Annotated[int | None, Query(ge=1, le=MAX_EF_SEARCH, description="HNSW search depth.")] = None,
) -> SearchResponse:
    """Clips that best match the query, best first."""
    options = engine.SearchOptions(k, offset, group_by, min_score, nprobe, ef_search)
    results, took_ms = await run_search(resources, index, [q], options)
    return to_response(q, took_ms, results[0], resources.settings.media_roots, viewer)


@router.post(
    "/search",
    response_model=SearchResponse | MultiSearchResponse,
    responses={400: {"model": Problem, "description": "A body that cannot be read (not UTF-8 JSON)."}},
)
async def search_post(
    resources: ResourcesDep, index: IndexDep, viewer: ViewerDep, body: SearchRequest
) -> SearchResponse | MultiSearchResponse:
    """The same for a JSON body; ``q`` may be a list of queries, answered together."""
    options = engine.SearchOptions(body.k, body.offset, body.group_by, body.min_score, body.nprobe, body.ef_search)
    queries = [body.q] if isinstance(body.q, str) else list(body.q)
    results, took_ms = await run_search(resources, index, queries, options)
    roots = resources.settings.media_roots
    if isinstance(body.q, str):
        return to_response(body.q, took_ms, results[0], roots, viewer)
    return MultiSearchResponse(
        took_ms=round(took_ms, 3),
        searches=[
            to_response(query, took_ms, result, roots, viewer) for query, result in zip(queries, results, strict=True)
        ],
    )
