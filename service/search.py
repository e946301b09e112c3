"""Search as plain functions: query vectors -> FAISS top candidates -> filters and pages -> catalog rows.

Nothing here knows HTTP. Each query looks at its ``window`` nearest clips among those its filter keeps:
``total`` counts the results among them (after ``min_score``, near-duplicates and grouping), and pages are
cut from that ranked list. ``search`` answers a batch of queries (``service.batching``) with one FAISS call
per index, depth and filter, and one catalog query.

A filter restricts FAISS to the clip ids it matches (``service.filtering``), chosen by how many match:
an exact index (``Flat``) skips the others while it scans, exact at any selectivity; an approximate one
(IVF, HNSW) scores the matching clips exhaustively when they are few (at most ``EXACT_SHARE`` of the index,
or ``EXACT_MIN`` clips), and otherwise skips the others while it scans with a search depth raised by
``1 / sqrt(selectivity)``, so that it still meets as many matching candidates as an unfiltered search would
(recall and latency per selectivity: docs/BENCHMARKS.md, "Filtered search").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy.orm import Session

from indexer import vector_index
from indexer.queries import ClipRow, clip_rows
from indexer.store import PublishedIndex
from indexer.vector_index import IdSet

from .access import inside_roots
from .batching import Query
from .filtering import ClipFilter
from .filters import Node
from .metrics import Metrics

EXACT_SHARE = 0.003  # an approximate index scores the matching clips exhaustively up to this share of it
EXACT_MIN = 3_000  # ... or up to this many clips (measured crossover: docs/BENCHMARKS.md, "Filtered search")

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10
    offset: int = 0
    group_by: Literal["video"] | None = None  # "video": only the best clip of each video
    min_score: float | None = None  # drop results scoring below this (cosine similarity, -1..1)
    nprobe: int | None = None  # IVF lists visited; None: the published version's default
    ef_search: int | None = None  # HNSW search depth; None: the published version's default
    filter: Node | None = None  # only clips of videos it keeps
    dedupe: float | None = None  # collapse results whose embeddings have at least this cosine, keeping the best


@dataclass
class ServedIndex(PublishedIndex):
    """A published index as the service serves it: with the attributes its filters are evaluated on."""

    clip_filter: ClipFilter | None = None

    def restrict(self, node: Node | None) -> IdSet | None:
        """The clip ids ``node`` keeps (None: no filter)."""
        if node is None:
            return None
        if self.clip_filter is None:
            raise RuntimeError("this index was served without its clip attributes")
        return self.clip_filter.matching(node)


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based position in the whole ranked list
    score: float
    clip: ClipRow


@dataclass(frozen=True)
class SearchResult:
    total: int  # results within the window, before paging
    hits: list[Hit]
    vector: np.ndarray | None = None  # the query vector searched with (float32, unit length)
    candidates: tuple[np.ndarray, np.ndarray] | None = None  # (scores, clip ids) of the whole ranked window


def nearest(
    index: PublishedIndex,
    vectors: np.ndarray,
    window: int,
    options: SearchOptions,
    metrics: Metrics | None = None,
    only: IdSet | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query row: (scores, clip ids) of up to ``window`` nearest clips, best first, at the depth of
    ``options`` (its ``min_score`` is applied by ``ranked``), among ``only`` when given."""
    available = int(index.index.ntotal) if only is None else len(only)
    count = min(window, available)
    if count == 0:
        return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in range(len(vectors))]
    started = time.perf_counter()
    if only is None or len(only) == index.index.ntotal:
        scores, ids = index.search(vectors, count, nprobe=options.nprobe, ef_search=options.ef_search)
    else:
        scores, ids = _search_among(index, vectors, count, options, only)
    if metrics is not None:
        metrics.search_seconds.observe(time.perf_counter() - started)
    return list(zip(scores, ids, strict=True))


def _search_among(
    index: PublishedIndex, vectors: np.ndarray, count: int, options: SearchOptions, only: IdSet
) -> tuple[np.ndarray, np.ndarray]:
    """The strategy for a filtered search (module docstring)."""
    total = int(index.index.ntotal)
    if not vector_index.is_approximate(index.index):
        return vector_index.search(index.index, vectors, count, only=only)
    if len(only) <= max(EXACT_MIN, EXACT_SHARE * total):
        return vector_index.search_exactly_among(index.index, vectors, count, only.ids)
    return index.search(
        vectors,
        count,
        nprobe=options.nprobe,
        ef_search=options.ef_search,
        only=only,
        depth_boost=1 / math.sqrt(len(only) / total),
    )


def deduplicated(
    index: PublishedIndex, scores: np.ndarray, ids: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ranked candidates without near-duplicates: going down the list, a clip whose embedding has a cosine
    of at least ``threshold`` with one already kept is left out (re-uploads and copies keep their best)."""
    if len(ids) < 2:
        return scores, ids
    vectors = vector_index.reconstruct(index.index, ids)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    alike = vector_index.similar_pairs(vectors, threshold)
    kept = np.zeros(len(ids), dtype=bool)
    for i, rows in enumerate(alike):
        kept[i] = not kept[rows].any()
    return scores[kept], ids[kept]


def ranked(scores: np.ndarray, ids: np.ndarray, options: SearchOptions) -> tuple[np.ndarray, np.ndarray]:
    """One query's candidates without the empty slots and those under ``min_score``."""
    keep = ids >= 0
    if options.min_score is not None:
        keep &= scores >= options.min_score
    return scores[keep], ids[keep]


def ids_to_show(ids: np.ndarray, options: SearchOptions) -> list[int]:
    """The clips whose catalog rows a page needs: all candidates when grouping (a clip's video decides
    whether it is kept), else the page's own."""
    if options.group_by == "video":
        return ids.tolist()
    return ids[options.offset : options.offset + options.k].tolist()


def page_of(rows: dict[int, ClipRow], scores: np.ndarray, ids: np.ndarray, options: SearchOptions) -> SearchResult:
    """One query's page, from its ranked candidates and the catalog rows of ``ids_to_show``."""
    if options.group_by == "video":
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
    # a clip deleted since the index was published has no row: it is left out of the page
    kept = [(score, rows[clip_id]) for score, clip_id in zip(page_scores, page_ids, strict=True) if clip_id in rows]
    hits = [Hit(options.offset + i + 1, score, row) for i, (score, row) in enumerate(kept)]
    return SearchResult(total=len(ids), hits=hits)


def search(
    queries: Sequence[Query[ServedIndex, SearchOptions]],
    sessions: SessionFactory,
    window: int,
    metrics: Metrics | None = None,
    media_roots: Sequence[Path] = (),
) -> list[SearchResult]:
    """Results of several queries at once, in order: one FAISS call per index, search depth and filter
    among them, then one catalog look-up for all their pages. Clips of videos outside ``media_roots`` (when
    there are any) are left out like deleted ones."""
    groups: dict[tuple[int, int | None, int | None, Node | None], list[int]] = {}
    for i, query in enumerate(queries):
        key = (id(query.index), query.options.nprobe, query.options.ef_search, query.options.filter)
        groups.setdefault(key, []).append(i)
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for members in groups.values():
        first = queries[members[0]]
        vectors = np.stack([queries[i].vector for i in members])
        only = first.index.restrict(first.options.filter)
        for i, (scores, ids) in zip(
            members, nearest(first.index, vectors, window, first.options, metrics, only), strict=True
        ):
            found[i] = ranked(scores, ids, queries[i].options)
            threshold = queries[i].options.dedupe
            if threshold is not None:
                found[i] = deduplicated(first.index, *found[i], threshold)
    candidates = [found[i] for i in range(len(queries))]
    wanted = {
        clip_id
        for query, (_, ids) in zip(queries, candidates, strict=True)
        for clip_id in ids_to_show(ids, query.options)
    }
    started = time.perf_counter()
    with sessions() as session:
        rows = clip_rows(session, wanted)
    if media_roots:
        rows = {clip_id: row for clip_id, row in rows.items() if inside_roots(row.path, media_roots)}
    results = [
        replace(page_of(rows, scores, ids, query.options), vector=query.vector, candidates=(scores, ids))
        for query, (scores, ids) in zip(queries, candidates, strict=True)
    ]
    if metrics is not None:
        metrics.catalog_seconds.observe(time.perf_counter() - started)
    return results
