"""Request and response models: the JSON shapes of the REST API (docs/ARCHITECTURE.md), and the limits on input."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_QUERY_CHARS = 1000  # the encoder reads at most its max_words tokens anyway
MAX_K = 100
MAX_OFFSET = 900  # offset + k stays within the default result window of 1000 clips
MAX_QUERIES = 32  # queries in one POST /search
MAX_ID = 2**63 - 1  # catalog ids are signed 64-bit
MAX_NPROBE = 1 << 16
MAX_EF_SEARCH = 1 << 14
DEFAULT_DEDUPE_THRESHOLD = 0.97  # docs/BENCHMARKS.md, "Near-duplicates": re-encodes above, other videos below
DEFAULT_IMAGE_WEIGHT = 0.5
NOT_BLANK = r"\S"  # JSON Schema patterns are unanchored: at least one character that is not a space

QueryText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        pattern=NOT_BLANK,
        description=f"What to look for, in words (1 to {MAX_QUERY_CHARS} characters, not only spaces).",
        examples=["a red circle moves to the right"],
    ),
]
GroupBy = Literal["video"]

FILTER_DESCRIPTION = (
    "Keep only clips of videos that satisfy this: the text form, e.g. `meta.year >= 2023 AND meta.tags:sports "
    "AND collection IN (news, sport)` (GET /search's `filter=`), or the same tree as JSON. Fields: collection, "
    "codec, duration (s), size (bytes), width, height, fps, indexed_at (ISO 8601), video_id, and meta.KEY for "
    "manifest metadata. A missing value makes a comparison false."
)
DEDUPE_DESCRIPTION = (
    "Collapse results whose embeddings are near-identical (re-uploads, copies), keeping the best ranked."
)
DEDUPE_THRESHOLD_DESCRIPTION = "Cosine of two results' embeddings at and above which dedupe counts them as one."
COLLECTION_DESCRIPTION = "Only these collections (comma-separated names); all when absent."
LIKE_DESCRIPTION = "Search with this clip's embedding instead of words: clips like it (itself first)."
CONFIDENCE_DESCRIPTION = (
    "Probability (0..1) that the clip matches the words, from the checkpoint's score calibration fitted on data "
    "it was not trained on (`tvr confidence fit`); null for a search by example or a checkpoint without one."
)
MOMENTS_DESCRIPTION = "Give each result its moment: where around the clip its video matches (GET /videos/{id}/moments)."
MOMENT_DESCRIPTION = (
    "With moments=true: the stretch of the video around this clip where the query matches, cut at window edges "
    "(looked for within 60 s of the clip)."
)
MIN_CONFIDENCE_DESCRIPTION = "Drop results whose confidence is below this (0..1, searches in words only)."
MODE_DESCRIPTION = (
    "What to match the words with: `visual` (the frames, by the encoder), `speech` (subtitle and transcript "
    "text, full-text search) or `hybrid` (both, by reciprocal rank fusion). Default: hybrid when any video of "
    "the searched collections has subtitle text, else visual. Searches by example are visual."
)
MATCHED_DESCRIPTION = "The rankings that found this result: `visual` (the frames) and/or `speech` (its words)."
SNIPPET_DESCRIPTION = "The subtitle text of the clip that matched the words (speech matches only)."
HIGHLIGHTS_DESCRIPTION = "The matched words in `snippet`, as [start, end) character offsets (no markup)."
FUSED_SCORE_DESCRIPTION = (
    "In hybrid and speech modes, the value results are ordered by: the sum of 1/(60 + rank) over the visual and "
    "speech rankings holding the clip; `score` and `confidence` stay the frames' (visual) ones."
)
SearchMode = Literal["visual", "speech", "hybrid"]
EXCLUDE_VIDEO_DESCRIPTION = "With `like`: leave out the clips of the liked clip's own video."


class Problem(BaseModel):
    """Every error answer except request validation (422): a message saying what is wrong."""

    detail: str


# --- search ----------------------------------------------------------------------------------------------


class VideoRef(BaseModel):
    id: int
    title: str | None
    path: str
    duration: float | None


class Moment(BaseModel):
    start: float = Field(description="Moment start, seconds into the video (a window edge: at the stride).")
    end: float
    score: float = Field(description="Its best stretch's score: the mean of the clips covering that stretch.")
    confidence: float | None = Field(description=CONFIDENCE_DESCRIPTION)


class SearchHit(BaseModel):
    rank: int = Field(description="1-based position in the whole ranked list (offset included).")
    score: float = Field(description="Cosine similarity of the query and the clip (its frames), -1..1, in every mode.")
    confidence: float | None = Field(None, description=CONFIDENCE_DESCRIPTION)
    clip_id: int
    video_id: int
    video: VideoRef
    start: float = Field(description="Clip start, seconds into the video.")
    end: float
    thumbnail_url: str
    media_url: str = Field(description="The video file, with a #t=start,end media fragment.")
    moment: Moment | None = Field(None, description=MOMENT_DESCRIPTION)
    matched: list[Literal["visual", "speech"]] = Field(["visual"], description=MATCHED_DESCRIPTION)
    fused_score: float | None = Field(None, description=FUSED_SCORE_DESCRIPTION)
    snippet: str | None = Field(None, description=SNIPPET_DESCRIPTION)
    highlights: list[tuple[int, int]] = Field([], description=HIGHLIGHTS_DESCRIPTION)


class SearchResponse(BaseModel):
    query: str | None = Field(description="The words searched for; null when searching by example only.")
    like: int | None = Field(None, description="The clip searched like (``like=``), if any.")
    example: Literal["image", "video"] | None = Field(None, description="The kind of example uploaded, if any.")
    mode: SearchMode = Field("visual", description="How the results were ranked (see the `mode` parameter).")
    took_ms: float
    total: int = Field(description="Results for this query within the service's result window, before paging.")
    results: list[SearchHit]


class SearchKnobs(BaseModel):
    """How results are ranked and paged: the fields every form of search takes."""

    dedupe: bool = Field(False, description=DEDUPE_DESCRIPTION)
    dedupe_threshold: float = Field(DEFAULT_DEDUPE_THRESHOLD, ge=0.0, le=1.0, description=DEDUPE_THRESHOLD_DESCRIPTION)
    k: int = Field(10, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    group_by: GroupBy | None = None
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    min_confidence: Annotated[float, Field(gt=0.0, lt=1.0)] | None = Field(None, description=MIN_CONFIDENCE_DESCRIPTION)
    moments: bool = Field(False, description=MOMENTS_DESCRIPTION)
    mode: SearchMode | None = Field(None, description=MODE_DESCRIPTION)
    nprobe: Annotated[int, Field(ge=1, le=MAX_NPROBE)] | None = None
    ef_search: Annotated[int, Field(ge=1, le=MAX_EF_SEARCH)] | None = None


class SearchForm(SearchKnobs):
    """POST /search as ``multipart/form-data``: search by an example file, ``image`` (JPEG, PNG or WebP) or
    ``video`` (a short clip, decoded as ingestion decodes), optionally mixed with words ``q``; the other
    fields as in the JSON body (``collection`` and ``filter`` in their text forms)."""

    model_config = ConfigDict(extra="forbid")

    image: bytes | None = Field(None, description="An image to search with, encoded as a still clip.")
    video: bytes | None = Field(
        None, description="A short video to search with (size and duration limits: TVR_EXAMPLE_MAX_VIDEO_*)."
    )
    q: QueryText | None = None
    image_weight: float = Field(
        DEFAULT_IMAGE_WEIGHT,
        ge=0.0,
        le=1.0,
        description="With q: the example's share of the query vector (the text gets the rest).",
    )
    collection: Annotated[str, Field(max_length=4000)] | None = Field(None, description=COLLECTION_DESCRIPTION)
    filter: Annotated[str, Field(max_length=4000)] | None = Field(None, description=FILTER_DESCRIPTION)


class InvalidRequest(BaseModel):
    """A request the service cannot use (422): the problems, and one sentence saying them."""

    detail: list[dict[str, Any]]
    message: str


class MultiSearchResponse(BaseModel):
    took_ms: float
    searches: list[SearchResponse] = Field(description="One answer per query, in the order asked.")


# --- search filters (service/filters.py) ---------------------------------------------------------------

FilterScalar = Annotated[str, Field(max_length=1000)] | int | float | bool


class FilterComparison(BaseModel):
    """``field op value``: ``op`` one of = != < <= > >= (one value), ``in`` (a list), ``:`` (list membership)."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1, max_length=200, examples=["duration", "meta.tags"])
    op: Literal["=", "!=", "<", "<=", ">", ">=", "in", ":"]
    value: FilterScalar | Annotated[list[FilterScalar], Field(min_length=1, max_length=1000)]


class FilterAll(BaseModel):
    """True when every filter in the list is."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    all_of: list[FilterNode] = Field(alias="and", min_length=1, max_length=64)


class FilterAny(BaseModel):
    """True when any filter in the list is."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    any_of: list[FilterNode] = Field(alias="or", min_length=1, max_length=64)


class FilterNot(BaseModel):
    """True when the filter is not."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    negated: FilterNode = Field(alias="not")


FilterNode = FilterComparison | FilterAll | FilterAny | FilterNot


_INTEGER_FIELDS = frozenset({"k", "offset", "nprobe", "ef_search", "like"})


class SearchRequest(SearchKnobs):
    """``q`` is one query (the answer is a SearchResponse) or a list of them (a MultiSearchResponse); or
    ``like`` (a clip id) instead of ``q``. The same body may come as ``multipart/form-data`` with an ``image``
    or ``video`` file to search by example (see the request body's other content type)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    q: QueryText | Annotated[list[QueryText], Field(min_length=1, max_length=MAX_QUERIES)] | None = None
    like: int | None = Field(None, ge=1, le=MAX_ID, description=LIKE_DESCRIPTION)
    exclude_video: bool = Field(False, description=EXCLUDE_VIDEO_DESCRIPTION)
    collection: (
        Annotated[str, Field(max_length=4000)]
        | Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=100)]
        | None
    ) = Field(None, description="Only these collections (a list, or comma-separated names); all when absent.")
    filter: Annotated[str, Field(max_length=4000)] | FilterNode | None = Field(None, description=FILTER_DESCRIPTION)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats_are_integers(cls, data: object) -> object:
        """JSON Schema counts 10.0 as an integer; strict validation still refuses 2.5, "10" and true."""
        if isinstance(data, dict):
            return {
                key: int(value) if key in _INTEGER_FIELDS and isinstance(value, float) and value.is_integer() else value
                for key, value in data.items()
            }
        return data


# --- catalog ---------------------------------------------------------------------------------------------


class ClipOut(BaseModel):
    id: int
    position: int
    start: float
    end: float
    thumbnail_url: str | None
    media_url: str


class VideoOut(BaseModel):
    id: int
    title: str | None
    path: str
    status: Literal["pending", "indexed", "failed"]
    error: str | None
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    size: int | None
    clip_count: int
    media_url: str
    created_at: datetime | None
    indexed_at: datetime | None


class VideoPage(BaseModel):
    total: int
    offset: int
    limit: int
    videos: list[VideoOut]


class TextTrackOut(BaseModel):
    """A subtitle or transcript of a video, as ingestion found it."""

    source: str = Field(description="The subtitle file (a path as video paths are shown), or `stream:N` if embedded.")
    language: str | None = Field(description="From the file name (`talk.en.vtt`) or the stream's tag.")
    status: Literal["ok", "failed"] = Field(description="`failed`: the file could not be read; `error` says why.")
    error: str | None
    segments: int = Field(description="Timed text segments in the full-text index.")


class VideoDetail(VideoOut):
    clips: list[ClipOut]
    subtitles: list[TextTrackOut] = Field(
        [], description="Its subtitle and transcript tracks (searched by mode=speech)."
    )


class CurvePoint(BaseModel):
    start: float = Field(description="Clip start, seconds into the video.")
    end: float
    score: float = Field(description="Cosine similarity of the words and the clip.")


class MomentsResponse(BaseModel):
    video_id: int
    query: str
    threshold: float = Field(description="Score from which a stretch of the video belongs to a moment.")
    curve: list[CurvePoint] = Field(description="The score of every clip of the video, in time order.")
    moments: list[Moment] = Field(description="The best moments, best first.")


# --- operations ------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    stage: str = Field(description="'ready', or what is loading or missing.")
    checkpoint: str | None = Field(description="Checkpoint id of the text encoder.")
    index_version: int | None
    index_checkpoint: str | None = Field(description="Checkpoint id recorded with the index.")
    index_factory: str | None
    vectors: int | None
    catalog_other_checkpoints: list[str] = Field(
        description="Checkpoints of indexed catalog videos that the served index was not built with."
    )
    index_behind_catalog_s: float | None = Field(
        description="Seconds since a periodic check first found the catalog's clips differ from the served "
        "index's (searches miss the newest changes, as during a long ingest); null when in step at the last "
        "check, before the first check, and when the periodic check is off (TVR_INDEX_SYNC_S=0)."
    )


class ReloadResponse(BaseModel):
    reloaded: bool = Field(description="False when the newest published version was already served.")
    version: int
    previous: int | None
    vectors: int


class DeleteAccepted(BaseModel):
    deleted: int = Field(description="Id of the deleted video (gone from the catalog and from searches).")
    path: str = Field(description="Its file on the server.")
    job_id: str = Field(description="The background job that republishes the index: GET /admin/jobs/{job_id}.")


class JobOut(BaseModel):
    id: str
    kind: str = Field(description="What the job does: 'republish' brings the index in line with the catalog.")
    state: Literal["queued", "running", "succeeded", "failed"]
    error: str | None = Field(description="Why it failed.")
    index_version: int | None = Field(description="The index version served when it succeeded.")
    created_at: datetime
    finished_at: datetime | None
