"""Request and response models: the JSON shapes of the REST API (docs/ARCHITECTURE.md), and the limits on input."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_QUERY_CHARS = 1000  # the encoder reads at most its max_words tokens anyway
MAX_K = 100
MAX_OFFSET = 900  # offset + k stays within the default result window of 1000 clips
MAX_QUERIES = 32  # queries in one POST /search
MAX_ID = 2**63 - 1  # catalog ids are signed 64-bit
MAX_NPROBE = 1 << 16
MAX_EF_SEARCH = 1 << 14
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


class Problem(BaseModel):
    """Every error answer except request validation (422): a message saying what is wrong."""

    detail: str


# --- search ----------------------------------------------------------------------------------------------


class VideoRef(BaseModel):
    id: int
    title: str | None
    path: str
    duration: float | None


class SearchHit(BaseModel):
    rank: int = Field(description="1-based position in the whole ranked list (offset included).")
    score: float = Field(description="Cosine similarity of the query and the clip, -1..1.")
    clip_id: int
    video_id: int
    video: VideoRef
    start: float = Field(description="Clip start, seconds into the video.")
    end: float
    thumbnail_url: str
    media_url: str = Field(description="The video file, with a #t=start,end media fragment.")


class SearchResponse(BaseModel):
    query: str
    took_ms: float
    total: int = Field(description="Results for this query within the service's result window, before paging.")
    results: list[SearchHit]


class MultiSearchResponse(BaseModel):
    took_ms: float
    searches: list[SearchResponse] = Field(description="One answer per query, in the order asked.")


_INTEGER_FIELDS = frozenset({"k", "offset", "nprobe", "ef_search"})


class SearchRequest(BaseModel):
    """``q`` is one query (the answer is a SearchResponse) or a list of them (a MultiSearchResponse)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    q: QueryText | Annotated[list[QueryText], Field(min_length=1, max_length=MAX_QUERIES)]
    k: int = Field(10, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    group_by: GroupBy | None = None
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    nprobe: Annotated[int, Field(ge=1, le=MAX_NPROBE)] | None = None
    ef_search: Annotated[int, Field(ge=1, le=MAX_EF_SEARCH)] | None = None

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


class VideoDetail(VideoOut):
    clips: list[ClipOut]


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
