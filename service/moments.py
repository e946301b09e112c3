"""Moments: where inside a video the words match, from the scores of its overlapping clips.

A long video is stored as overlapping windows (10 s every 5 s by default). Its *curve* is the score of
every window in time order. Moments come from a finer timeline: the video is cut at every window start and
end into elementary segments (5 s with the default policy), each scored as the mean of the windows covering
it, so a segment scores high only when every window around it does. A *moment* is a maximal run of
segments scoring above the video's threshold, ``median + MOMENT_LEVEL x (peak - median)`` of its segment
scores (scale-free: it needs no knowledge of the checkpoint's cosine range), or at the peak; its score is
its best segment's. (A segment half on an event, between a window on it and one off it, scores the mean of
the two, which is the threshold when the rest of the video scores like the window off it: it stays out.)
Edges fall on segment boundaries: at the stride, finer than one window when windows overlap.

Nothing here knows HTTP: windows and scores in, spans out; ``hit_moments`` reads the windows near search hits
from the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from indexer.queries import ClipRow, clip_vectors

MOMENT_LEVEL = 0.5  # a segment belongs to a moment from halfway between the video's median and its peak
MAX_MOMENTS = 5  # moments returned per video, best first
SEARCH_REACH_S = 60.0  # /search?moments=true: the hit's moment is looked for this far around its clip


@dataclass(frozen=True)
class Span:
    start: float  # seconds
    end: float
    score: float


def segments(windows: Sequence[tuple[float, float]], scores: np.ndarray) -> list[Span]:
    """The elementary segments between consecutive window edges, each scored as the mean of the windows
    covering it (segments no window covers are left out)."""
    starts = np.array([w[0] for w in windows], dtype=np.float64)
    ends = np.array([w[1] for w in windows], dtype=np.float64)
    edges = np.unique(np.concatenate([starts, ends]))
    spans = []
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        middle = (left + right) / 2
        covering = (starts <= middle) & (ends >= middle)
        if covering.any():
            spans.append(Span(float(left), float(right), float(scores[covering].mean())))
    return spans


def threshold(spans: Sequence[Span], level: float = MOMENT_LEVEL) -> float:
    """The score from which a segment is part of a moment."""
    values = np.array([s.score for s in spans])
    median, peak = float(np.median(values)), float(values.max())
    return median + level * (peak - median)


def _runs(spans: Sequence[Span], floor: float) -> list[Span]:
    """Maximal runs of adjacent segments scoring above ``floor`` (or at the peak), each with its best
    segment's score."""
    peak = max(span.score for span in spans)
    runs: list[Span] = []
    current: Span | None = None
    for span in spans:
        inside = span.score > floor or span.score >= peak
        joined = current is not None and abs(current.end - span.start) < 1e-6
        if inside and joined:
            assert current is not None
            current = Span(current.start, span.end, max(current.score, span.score))
        else:
            if current is not None:
                runs.append(current)
            current = span if inside else None
    if current is not None:
        runs.append(current)
    return runs


def best_runs(spans: Sequence[Span], floor: float, limit: int = MAX_MOMENTS) -> list[Span]:
    """The runs of ``spans`` above ``floor``, best first (at least one: the peak's run)."""
    if not spans:
        return []
    return sorted(_runs(spans, floor), key=lambda run: (-run.score, run.start))[:limit]


def find_moments(
    windows: Sequence[tuple[float, float]], scores: np.ndarray, level: float = MOMENT_LEVEL, limit: int = MAX_MOMENTS
) -> list[Span]:
    """A video's best moments, best first (at least one: the peak's run)."""
    spans = segments(windows, scores)
    return best_runs(spans, threshold(spans, level), limit) if spans else []


def moment_of_clip(
    windows: Sequence[tuple[float, float]], scores: np.ndarray, clip: tuple[float, float], level: float = MOMENT_LEVEL
) -> Span:
    """The moment holding a search hit ``clip`` (one of ``windows``, which may be only the windows near it):
    the run around the clip's best segment at the threshold of ``windows``; the clip itself, with its own
    score, when no segment of it reaches the threshold."""
    spans = segments(windows, scores)
    inside = [s for s in spans if s.start >= clip[0] - 1e-6 and s.end <= clip[1] + 1e-6]
    best = max(inside or spans, key=lambda s: s.score)
    for run in _runs(spans, threshold(spans, level)):
        if run.start <= best.start and best.end <= run.end:
            return run
    own = [score for window, score in zip(windows, scores, strict=True) if window == clip]
    return Span(clip[0], clip[1], float(own[0]) if own else best.score)


def hit_moments(session: Session, clips: Sequence[ClipRow], vector: np.ndarray) -> dict[int, Span]:
    """The moment of each search hit's clip, by clip id, from the clips of its video within
    ``SEARCH_REACH_S`` of it (bounded work however long the video)."""
    found: dict[int, Span] = {}
    for clip in clips:
        near = clip_vectors(session, clip.video_id, clip.start - SEARCH_REACH_S, clip.end + SEARCH_REACH_S)
        if near.ids:
            found[clip.clip_id] = moment_of_clip(near.windows, near.vectors @ vector, (clip.start, clip.end))
    return found
