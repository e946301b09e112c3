"""Search by what is said: subtitle segments found by full-text search, mapped to clips and fused with the
visual ranking (issue 16).

Modes (``mode=``): ``visual`` ranks clips by the encoder alone; ``speech`` by the catalog's full-text index
alone (``indexer.text_queries``: any of the query's words, English stemming); ``hybrid`` fuses the two.
Without ``mode``, a search in words is hybrid when any indexed video of the searched collections has
subtitle text, and visual otherwise (so a library without subtitles is searched as before).

Speech ranking: segments best first; each goes to the clip of its video that overlaps it longest (ties:
the clip whose middle is nearest the segment's), and a clip ranks where its best segment does.

Fusion: reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): a clip scores
``sum of 1 / (RRF_K + rank)`` over the rankings that hold it within their first ``FUSION_DEPTH``, with
``RRF_K = 60``; ties go to the better visual score. A ranking holding nothing leaves the other's order as it
is: hybrid search of a library without text ranks exactly as visual search.

What a result carries: ``score`` and ``confidence`` are always the visual ones, the cosine of the clip with
the query vector and its calibrated probability, for speech-only hits too, where they say how well the
frames show the words; ``fused_score`` is the value results are ordered by in hybrid and speech modes (in
speech mode ``1 / (RRF_K + speech rank)``); ``matched`` names the rankings that hold the result within
``FUSION_DEPTH``; ``snippet`` is the text of its best segment, ``highlights`` the matched words in it as
[start, end) character offsets. ``min_score`` and ``min_confidence`` restrict the visual ranking: a clip
found by its words stays whatever its frames score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy.orm import Session

from indexer.queries import clip_rows, fetch_embeddings
from indexer.text_queries import (
    MARK_END,
    MARK_START,
    SegmentClip,
    SegmentMatch,
    clips_over_segments,
    query_words,
    segment_matches,
)
from indexer.vector_index import IdSet

from .access import inside_roots
from .search import SearchOptions, SearchResult, ids_to_show, page_of

Mode = Literal["visual", "speech", "hybrid"]
RRF_K = 60
FUSION_DEPTH = 100  # clips of each ranking that take part in the fusion
SEGMENT_DEPTH = 4 * FUSION_DEPTH  # segments read to fill the speech ranking (several may fall in one clip)


@dataclass(frozen=True)
class Snippet:
    """A segment's text and the matched words in it, as [start, end) offsets into ``text``."""

    text: str
    highlights: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Evidence:
    """Why a hybrid or speech result is where it is."""

    fused_score: float
    matched: tuple[str, ...]  # "visual", "speech"
    snippet: Snippet | None


def unmark(marked: str) -> Snippet:
    """The plain text of a segment with its matched words between ``MARK_START`` and ``MARK_END``, and the
    offsets of those words in it."""
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    length, opened = 0, None
    for char in marked:
        if char == MARK_START:
            opened = length
        elif char == MARK_END:
            if opened is not None and length > opened:
                spans.append((opened, length))
            opened = None
        else:
            plain.append(char)
            length += 1
    return Snippet("".join(plain), tuple(spans))


def best_clip(match: SegmentMatch, clips: Sequence[SegmentClip]) -> int | None:
    """The clip overlapping the segment longest; ties: the one whose middle is nearest the segment's."""
    middle = (match.start + match.end) / 2

    def preference(clip: SegmentClip) -> tuple[float, float]:
        overlap = min(clip.end, match.end) - max(clip.start, match.start)
        return (-round(overlap, 6), abs((clip.start + clip.end) / 2 - middle))

    return min(clips, key=preference).clip_id if clips else None


def speech_ranking(matches: Sequence[SegmentMatch], overlaps: Sequence[SegmentClip]) -> list[tuple[int, Snippet]]:
    """Clips found by their words, best first, each with its best segment's snippet."""
    by_segment: dict[int, list[SegmentClip]] = {}
    for overlap in overlaps:
        by_segment.setdefault(overlap.segment_id, []).append(overlap)
    ranking: dict[int, Snippet] = {}
    for match in matches:
        clip_id = best_clip(match, by_segment.get(match.segment_id, []))
        if clip_id is not None and clip_id not in ranking:
            ranking[clip_id] = unmark(match.marked)
    return list(ranking.items())


def fuse(visual: Sequence[int], speech: Sequence[int], visual_scores: dict[int, float]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of two rankings of clip ids (each cut at ``FUSION_DEPTH``): (clip id, fused
    score), best first; ties to the better visual score, then the smaller id."""
    fused: dict[int, float] = {}
    for ranking in (visual[:FUSION_DEPTH], speech[:FUSION_DEPTH]):
        for rank, clip_id in enumerate(ranking, 1):
            fused[clip_id] = fused.get(clip_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], -visual_scores.get(item[0], -2.0), item[0]))


def found_by_speech(session: Session, query: str, only: IdSet | None) -> list[tuple[int, Snippet]]:
    """The speech ranking of ``query``: clips best first (among ``only`` when given), with snippets."""
    matches = segment_matches(session, query_words(query), SEGMENT_DEPTH)
    ranking = speech_ranking(matches, clips_over_segments(session, [m.segment_id for m in matches]))
    if only is not None:
        allowed = set(np.intersect1d(only.ids, [clip_id for clip_id, _ in ranking]).tolist())
        ranking = [(clip_id, snippet) for clip_id, snippet in ranking if clip_id in allowed]
    return ranking[:FUSION_DEPTH]


def fused_result(
    session: Session,
    result: SearchResult,
    query: str,
    mode: Mode,
    options: SearchOptions,
    only: IdSet | None,
    media_roots: Sequence[Path] = (),
) -> tuple[SearchResult, dict[int, Evidence]]:
    """The page of a speech or hybrid search, from the visual search's ``result`` (its candidates and query
    vector) and the speech ranking of ``query``; and each shown clip's evidence."""
    assert result.candidates is not None and result.vector is not None, "the engine keeps them for fusion"
    scores, ids = result.candidates
    visual_ids = ids[:FUSION_DEPTH].tolist() if mode == "hybrid" else []
    visual_scores = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    spoken = found_by_speech(session, query, only)
    order = fuse(visual_ids, [clip_id for clip_id, _ in spoken], visual_scores)
    fused_ids = np.array([clip_id for clip_id, _ in order], dtype=np.int64)
    shown = ids_to_show(fused_ids, options)
    rows = clip_rows(session, shown)
    if media_roots:
        rows = {clip_id: row for clip_id, row in rows.items() if inside_roots(row.path, media_roots)}
    missing = np.array([clip_id for clip_id in rows if clip_id not in visual_scores], dtype=np.int64)
    for chunk_ids, vectors in fetch_embeddings(session, missing):
        visual_scores.update(zip(chunk_ids.tolist(), (vectors @ result.vector).tolist(), strict=True))
    shown_scores = np.array([visual_scores.get(clip_id, float("nan")) for clip_id in fused_ids.tolist()])
    page = page_of(rows, shown_scores, fused_ids, options)
    snippets, in_visual = dict(spoken), set(visual_ids)
    fused_scores = dict(order)
    evidence = {
        hit.clip.clip_id: Evidence(
            fused_scores[hit.clip.clip_id],
            tuple(
                name
                for name, found in (("visual", hit.clip.clip_id in in_visual), ("speech", hit.clip.clip_id in snippets))
                if found
            ),
            snippets.get(hit.clip.clip_id),
        )
        for hit in page.hits
    }
    return replace(page, vector=result.vector, candidates=result.candidates), evidence
