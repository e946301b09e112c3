"""Full-text reads of subtitle and transcript segments (``text_segments``, migration 0006).

SQLite ranks with FTS5's ``bm25`` over ``text_segments_fts``; PostgreSQL with ``ts_rank_cd`` over the
stored ``tsvector`` and its GIN index. Both stem English words ("running" finds "runs") and match a segment
holding *any* of the query's words, best first: a sentence typed as a query rarely appears word for word.
Matched words come back between ``MARK_START`` and ``MARK_END`` (FTS5's ``highlight``, PostgreSQL's
``ts_headline``), so offsets are the database's own idea of a match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from .queries import IN_CHUNK

MARK_START, MARK_END = "\x02", "\x03"  # around matched words; never in stored text (control characters)
_WORD = re.compile(r"\w+", re.UNICODE)
# Left out of SQLite queries as PostgreSQL's English configuration leaves them out: words that nearly every
# segment holds and that would otherwise make nearly every segment a match.
_STOP_WORDS_TEXT = (
    "a an and are as at be but by for from has have he her his i in is it its of on or our she so that "
    "the their them then there they this to was we were what when which who will with you your"
)
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


@dataclass(frozen=True)
class SegmentMatch:
    """A subtitle segment holding words of the query: where it is, and its text with the words marked."""

    segment_id: int
    video_id: int
    start: float
    end: float
    marked: str


@dataclass(frozen=True)
class SegmentClip:
    """A clip overlapping a matched segment in time."""

    segment_id: int
    clip_id: int
    start: float
    end: float


def query_words(query: str) -> list[str]:
    """The words of ``query`` a full-text search looks for: letters and digits, lower case, once each,
    without stop words."""
    words = [word.lower() for word in _WORD.findall(query)]
    return [word for word in dict.fromkeys(words) if word not in STOP_WORDS]


_SQLITE_MATCHES = text(
    'SELECT s.id, s.video_id, s.start, s."end", highlight(text_segments_fts, 0, :mark_start, :mark_end) '
    "FROM text_segments_fts JOIN text_segments s ON s.id = text_segments_fts.rowid "
    "JOIN videos v ON v.id = s.video_id "
    "WHERE text_segments_fts MATCH :match AND v.status = 'indexed' "
    "ORDER BY bm25(text_segments_fts), s.id LIMIT :limit"
)
_POSTGRES_MATCHES = text(
    'SELECT s.id, s.video_id, s.start, s."end", '
    "ts_headline('english', s.text, q, :headline_options) "
    "FROM text_segments s JOIN videos v ON v.id = s.video_id, websearch_to_tsquery('english', :match) q "
    "WHERE s.tsv @@ q AND v.status = 'indexed' "
    "ORDER BY ts_rank_cd(s.tsv, q) DESC, s.id LIMIT :limit"
)


def segment_matches(session: Session, words: Sequence[str], limit: int) -> list[SegmentMatch]:
    """Up to ``limit`` segments of indexed videos holding any of ``words`` (``query_words``), best first."""
    if not words or limit <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            _POSTGRES_MATCHES,
            {
                "match": " or ".join(words),
                "headline_options": f"StartSel={MARK_START}, StopSel={MARK_END}, HighlightAll=true",
                "limit": limit,
            },
        )
    else:
        rows = session.execute(
            _SQLITE_MATCHES,
            {
                "match": " OR ".join('"' + word.replace('"', '""') + '"' for word in words),
                "mark_start": MARK_START,
                "mark_end": MARK_END,
                "limit": limit,
            },
        )
    return [SegmentMatch(int(r[0]), int(r[1]), float(r[2]), float(r[3]), str(r[4])) for r in rows]


_CLIPS_OVER_SEGMENTS = text(
    'SELECT s.id, c.id, c.start, c."end" FROM text_segments s '
    'JOIN clips c ON c.video_id = s.video_id AND c.start < s."end" AND c."end" > s.start '
    "WHERE s.id IN :ids"
).bindparams(bindparam("ids", expanding=True))


def clips_over_segments(session: Session, segment_ids: Sequence[int]) -> list[SegmentClip]:
    """Every clip overlapping each of the segments in time (a segment may overlap two windows)."""
    found: list[SegmentClip] = []
    ids = sorted(set(segment_ids))
    for begin in range(0, len(ids), IN_CHUNK):
        rows = session.execute(_CLIPS_OVER_SEGMENTS, {"ids": ids[begin : begin + IN_CHUNK]})
        found.extend(SegmentClip(int(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows)
    return found


# Tracks, not segments: one row per subtitle file or stream, so a collection without text is ruled out by
# reading the (few) tracks rather than every segment of the library.
_ANY_TEXT = text(
    "SELECT 1 FROM text_tracks t JOIN videos v ON v.id = t.video_id "
    "WHERE t.segments > 0 AND v.status = 'indexed' LIMIT 1"
)
_ANY_TEXT_IN = text(
    "SELECT 1 FROM text_tracks t JOIN videos v ON v.id = t.video_id "
    "WHERE t.segments > 0 AND v.status = 'indexed' AND v.collection IN :names LIMIT 1"
).bindparams(bindparam("names", expanding=True))


def has_text(session: Session, collections: Sequence[str] | None = None) -> bool:
    """Whether any indexed video (of ``collections``, when given) has subtitle or transcript text."""
    if collections is None:
        return session.execute(_ANY_TEXT).first() is not None
    return session.execute(_ANY_TEXT_IN, {"names": list(collections)}).first() is not None
