"""Search as plain functions: query vectors -> FAISS top candidates -> filters and pages -> catalog rows.

Nothing here knows HTTP. Each query looks at its ``window`` nearest clips: ``total`` counts the results
among them (after ``min_score`` and grouping), and pages are cut from that ranked list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sqlalchemy.orm import Session

from indexer.store import PublishedIndex

from .catalog_queries import ClipRow, clip_rows
from .metrics import Metrics

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10
    offset: int = 0
    group_by: Literal["video"] | None = None  # "video": only the best clip of each video
    min_score: float | None = None  # drop results scoring below this (cosine similarity, -1..1)
    nprobe: int | None = None  # IVF lists visited; None: the published version's default
    ef_search: int | None = None  # HNSW search depth; None: the published version's default


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based position in the whole ranked list
    score: float
    clip: ClipRow


@dataclass(frozen=True)
class SearchResult:
    total: int  # results within the window, before paging
    hits: list[Hit]


def nearest(
    index: PublishedIndex, vectors: np.ndarray, window: int, options: SearchOptions, metrics: Metrics | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query row: (scores, clip ids) of up to ``window`` nearest clips, best first, ``min_score`` applied."""
    count = min(window, int(index.index.ntotal))
    if count == 0:
        return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in range(len(vectors))]
    started = time.perf_counter()
    scores, ids = index.search(vectors, count, nprobe=options.nprobe, ef_search=options.ef_search)
    if metrics is not None:
        metrics.search_seconds.observe(time.perf_counter() - started)
    ranked = []
    for row_scores, row_ids in zip(scores, ids, strict=True):
        keep = row_ids >= 0
        if options.min_score is not None:
            keep &= row_scores >= options.min_score
        ranked.append((row_scores[keep], row_ids[keep]))
    return ranked


def page_of(
    session: Session, scores: np.ndarray, ids: np.ndarray, options: SearchOptions, metrics: Metrics | None = None
) -> SearchResult:
    """Join one query's ranked candidates with the catalog and cut the requested page."""
    started = time.perf_counter()
    try:
        if options.group_by == "video":
            rows = clip_rows(session, ids.tolist())  # every candidate: its video decides whether it is kept
            best: list[tuple[float, ClipRow]] = []
            seen: set[int] = set()
            for score, clip_id in zip(scores.tolist(), ids.tolist(), strict=True):
                row = rows.get(clip_id)
                if row is not None and row.video_id not in seen:
                    seen.add(row.video_id)
                    best.append((score, row))
            page = best[options.offset : options.offset + options.k]
            hits = [Hit(options.offset + i + 1, score, row) for i, (score, row) in enumerate(page)]
            return SearchResult(total=len(best), hits=hits)
        end = options.offset + options.k
        page_ids, page_scores = ids[options.offset : end].tolist(), scores[options.offset : end].tolist()
        rows = clip_rows(session, page_ids)
        # a clip deleted since the index was published has no row: it is left out of the page
        kept = [(score, rows[clip_id]) for score, clip_id in zip(page_scores, page_ids, strict=True) if clip_id in rows]
        hits = [Hit(options.offset + i + 1, score, row) for i, (score, row) in enumerate(kept)]
        return SearchResult(total=len(ids), hits=hits)
    finally:
        if metrics is not None:
            metrics.catalog_seconds.observe(time.perf_counter() - started)


def search(
    index: PublishedIndex,
    sessions: SessionFactory,
    vectors: np.ndarray,
    options: SearchOptions,
    window: int,
    metrics: Metrics | None = None,
) -> list[SearchResult]:
    """Results of each query row of ``vectors`` ([n, dim] float32, L2-normalised), in order."""
    ranked = nearest(index, np.atleast_2d(vectors), window, options, metrics)
    with sessions() as session:
        return [page_of(session, scores, ids, options, metrics) for scores, ids in ranked]
