"""Moments inside a video from the scores of its overlapping clips (service/moments.py), by hand."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.clips import ClipPolicy, clip_windows
from service.moments import Span, find_moments, moment_of_clip, segments, threshold

WINDOWS = clip_windows(60.0, ClipPolicy())  # 10-s windows every 5 s: (0, 10), (5, 15), ..., (50, 60)


def _scores(high: dict[tuple[float, float], float], low: float = 0.1) -> np.ndarray:
    return np.array([high.get(window, low) for window in WINDOWS])


def test_an_event_between_window_edges_is_found_at_the_stride_not_the_window():
    # the event fills 20-35 s: the two windows inside it score 0.9, the two half on it 0.5, the rest 0.1
    scores = _scores({(15.0, 25.0): 0.5, (20.0, 30.0): 0.9, (25.0, 35.0): 0.9, (30.0, 40.0): 0.5})
    spans = segments(WINDOWS, scores)
    assert [(s.start, s.end) for s in spans] == [(5.0 * i, 5.0 * i + 5) for i in range(12)]
    assert [round(s.score, 3) for s in spans[2:9]] == [0.1, 0.3, 0.7, 0.9, 0.7, 0.3, 0.1]  # means of 2 windows
    assert threshold(spans) == pytest.approx(0.1 + 0.5 * (0.9 - 0.1))  # halfway from the median to the peak
    (moment,) = find_moments(WINDOWS, scores)
    assert (moment.start, moment.end) == (20.0, 35.0) and moment.score == pytest.approx(0.9)
    # a search hit on any window inside the event gets the same span
    assert moment_of_clip(WINDOWS, scores, (25.0, 35.0)) == moment


def test_two_events_are_two_moments_best_first():
    scores = _scores({(0.0, 10.0): 0.6, (40.0, 50.0): 0.9, (45.0, 55.0): 0.9})
    moments = find_moments(WINDOWS, scores)
    assert [(m.start, m.end) for m in moments] == [(45.0, 50.0), (0.0, 5.0)]
    assert moments[0].score > moments[1].score


def test_a_hit_below_its_videos_threshold_is_its_own_clip():
    scores = _scores({(40.0, 50.0): 0.9, (45.0, 55.0): 0.9, (10.0, 20.0): 0.2})
    assert moment_of_clip(WINDOWS, scores, (10.0, 20.0)) == Span(10.0, 20.0, pytest.approx(0.2))


def test_a_short_video_is_one_moment_and_the_last_window_may_be_off_the_stride():
    assert find_moments([(0.0, 7.5)], np.array([0.3])) == [Span(0.0, 7.5, pytest.approx(0.3))]
    windows = clip_windows(33.0, ClipPolicy())  # ..., (20, 30), (23, 33): the last one reaches the end
    assert windows[-1] == (23.0, 33.0)
    edges = [(s.start, s.end) for s in segments(windows, np.linspace(0, 1, len(windows)))]
    assert edges[-4:] == [(20.0, 23.0), (23.0, 25.0), (25.0, 30.0), (30.0, 33.0)]
    assert find_moments([], np.empty(0)) == []
