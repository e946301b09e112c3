"""The speech half of search without a database: marked text to snippets, segments to clips, and the
reciprocal rank fusion against rankings computed by hand."""

from __future__ import annotations

import pytest

from indexer.text_queries import MARK_END, MARK_START, SegmentClip, SegmentMatch, query_words
from service.speech import FUSION_DEPTH, RRF_K, best_clip, fuse, speech_ranking, unmark


def marked(text: str) -> str:
    return text.replace("[", MARK_START).replace("]", MARK_END)


def test_unmark_gives_plain_text_and_offsets_of_the_marked_words() -> None:
    snippet = unmark(marked("the [volcano] erupted near the [volcanoes] of Iceland"))
    assert snippet.text == "the volcano erupted near the volcanoes of Iceland"
    assert [snippet.text[a:b] for a, b in snippet.highlights] == ["volcano", "volcanoes"]


def test_unmark_counts_characters_not_bytes() -> None:
    snippet = unmark(marked("über die [Brücke] gehen"))
    ((start, end),) = snippet.highlights
    assert snippet.text[start:end] == "Brücke"


def test_query_words_are_lower_case_once_each_without_stop_words() -> None:
    assert query_words("The volcano, the VOLCANO and lava!") == ["volcano", "lava"]
    assert query_words("the of and") == []


def segment(segment_id: int, start: float, end: float) -> SegmentMatch:
    return SegmentMatch(segment_id, video_id=1, start=start, end=end, marked=f"segment {segment_id}")


def test_a_segment_goes_to_the_clip_it_overlaps_longest() -> None:
    # windows of 10 s every 5 s; a cue at 11-13 s lies in [5, 15] and [10, 20] alike: the nearer middle wins
    clips = [SegmentClip(1, 11, 5.0, 15.0), SegmentClip(1, 12, 10.0, 20.0)]
    assert best_clip(segment(1, 11.0, 13.0), clips) == 11
    assert best_clip(segment(1, 12.5, 14.5), clips) == 12
    # 14-17 s: 1 s in [5, 15], 3 s in [10, 20]
    clips = [SegmentClip(1, 11, 5.0, 15.0), SegmentClip(1, 12, 10.0, 20.0)]
    assert best_clip(segment(1, 14.0, 17.0), clips) == 12
    assert best_clip(segment(1, 14.0, 17.0), []) is None


def test_a_clip_ranks_where_its_best_segment_does() -> None:
    matches = [segment(7, 1.0, 2.0), segment(8, 30.0, 31.0), segment(9, 3.0, 4.0)]
    overlaps = [SegmentClip(7, 100, 0.0, 10.0), SegmentClip(8, 103, 25.0, 35.0), SegmentClip(9, 100, 0.0, 10.0)]
    ranking = speech_ranking(matches, overlaps)
    assert [clip_id for clip_id, _ in ranking] == [100, 103]
    assert ranking[0][1].text == "segment 7"  # the best segment's snippet, not the later one


def test_fusion_matches_a_hand_computed_ranking() -> None:
    visual = [1, 2, 3, 4]
    speech = [3, 5, 1]
    scores = {1: 0.30, 2: 0.29, 3: 0.28, 4: 0.27, 5: 0.10}
    expected = {
        1: 1 / (RRF_K + 1) + 1 / (RRF_K + 3),
        2: 1 / (RRF_K + 2),
        3: 1 / (RRF_K + 3) + 1 / (RRF_K + 1),
        4: 1 / (RRF_K + 4),
        5: 1 / (RRF_K + 2),
    }
    fused = fuse(visual, speech, scores)
    # 1 and 3 tie on the fused score: the better visual score (1) first; 2 and 5 likewise (2 first)
    assert [clip_id for clip_id, _ in fused] == [1, 3, 2, 5, 4]
    for clip_id, value in fused:
        assert value == pytest.approx(expected[clip_id])


def test_fusion_with_an_empty_ranking_keeps_the_other_order() -> None:
    visual = [9, 4, 7, 1]
    scores = {9: 0.5, 4: 0.4, 7: 0.3, 1: 0.2}
    assert [clip_id for clip_id, _ in fuse(visual, [], scores)] == visual
    assert [clip_id for clip_id, _ in fuse([], [4, 9], scores)] == [4, 9]


def test_fusion_reads_each_ranking_to_its_depth_only() -> None:
    visual = list(range(1, FUSION_DEPTH + 2))
    fused = dict(fuse(visual, [], {}))
    assert FUSION_DEPTH + 1 not in fused
