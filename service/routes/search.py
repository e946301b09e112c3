"""``GET /search`` and ``POST /search``: words, a clip (``like=``) or an uploaded example in, ranked clips out.

``POST /search`` takes a JSON body (``schemas.SearchRequest``) or ``multipart/form-data`` with an ``image``
or ``video`` file (``schemas.SearchForm``), encoded in the examples' own process (``service.examples``)
while text searches go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from .. import search as engine
from ..access import Viewer, shown_path
from ..batching import CannotMix, QueryInput
from ..deps import IndexDep, ResourcesDep, ViewerDep
from ..errors import ERROR_RESPONSES
from ..example_media import ExampleRejected
from ..examples import read_upload, save_upload
from ..filters import Node
from ..resources import Resources
from ..schemas import (
    COLLECTION_DESCRIPTION,
    DEDUPE_DESCRIPTION,
    DEDUPE_THRESHOLD_DESCRIPTION,
    DEFAULT_DEDUPE_THRESHOLD,
    EXCLUDE_VIDEO_DESCRIPTION,
    FILTER_DESCRIPTION,
    LIKE_DESCRIPTION,
    MAX_EF_SEARCH,
    MAX_ID,
    MAX_K,
    MAX_NPROBE,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    MIN_CONFIDENCE_DESCRIPTION,
    MODE_DESCRIPTION,
    MOMENTS_DESCRIPTION,
    NOT_BLANK,
    GroupBy,
    InvalidRequest,
    Moment,
    MultiSearchResponse,
    Problem,
    SearchForm,
    SearchHit,
    SearchKnobs,
    SearchMode,
    SearchRequest,
    SearchResponse,
    VideoRef,
)
from ..search import ServedIndex

if TYPE_CHECKING:
    from model.calibration import ScoreCalibration
from indexer.text_queries import has_text

from ..moments import Span, hit_moments
from ..search_params import collection_names, invalid, like_vector, score_floor, search_filter
from ..speech import Evidence, Mode, fused_result
from ..urls import media_url, thumbnail_url

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)

UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "A body that cannot be read (not UTF-8 JSON, a broken form)."},
    404: {"model": Problem, "description": "``like`` names no indexed clip."},
    413: {"model": Problem, "description": "An uploaded example larger than the server's limit."},
    415: {"model": Problem, "description": "An example that is not a JPEG, PNG or WebP image (or not a video)."},
    422: {"model": InvalidRequest, "description": "Fields that cannot be used; the message says which and why."},
}


def to_response(
    query: str | None,
    took_ms: float,
    result: engine.SearchResult,
    media_roots: list[Path],
    viewer: Viewer,
    *,
    like: int | None = None,
    example: str | None = None,
    calibration: ScoreCalibration | None = None,
    moments: dict[int, Span] | None = None,
    mode: Mode = "visual",
    evidence: dict[int, Evidence] | None = None,
) -> SearchResponse:
    """The answer to one query; ``calibration`` (a search in words alone) gives each result its confidence,
    ``moments`` (``found_moments``) its moment, ``evidence`` (a speech or hybrid search) what matched."""

    def moment(clip_id: int) -> Moment | None:
        span = (moments or {}).get(clip_id)
        return None if span is None else moment_out(span, calibration)

    def why(clip_id: int) -> dict[str, Any]:
        found = (evidence or {}).get(clip_id)
        if found is None:
            return {}
        snippet = found.snippet
        return {
            "matched": list(found.matched),
            "fused_score": round(found.fused_score, 6),
            "snippet": None if snippet is None else snippet.text,
            "highlights": [] if snippet is None else list(snippet.highlights),
        }

    return SearchResponse(
        query=query,
        like=like,
        example=example,  # type: ignore[arg-type]
        mode=mode,
        took_ms=round(took_ms, 3),
        total=result.total,
        results=[
            SearchHit(
                rank=hit.rank,
                score=round(hit.score, 6),
                confidence=shown_confidence(calibration, hit.score),
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
                moment=moment(hit.clip.clip_id),
                **why(hit.clip.clip_id),
            )
            for hit in result.hits
        ],
    )


async def run_search(
    resources: Resources, index: ServedIndex, queries: list[str | QueryInput], options: engine.SearchOptions
) -> tuple[list[engine.SearchResult], float]:
    """Answered with concurrent requests' queries in one batch (service/batching.py); and the time it took."""
    started = time.perf_counter()
    settings = resources.settings
    options = replace(
        options,
        nprobe=options.nprobe if options.nprobe is not None else settings.nprobe,
        ef_search=options.ef_search if options.ef_search is not None else settings.ef_search,
    )
    try:
        results = await resources.queries.search(queries, options, index)
    except CannotMix as exc:
        invalid(("body", "image_weight"), str(exc))
    return results, (time.perf_counter() - started) * 1000


async def found_moments(
    resources: Resources, knobs: SearchKnobs, result: engine.SearchResult
) -> dict[int, Span] | None:
    """With ``moments=true``, each hit's moment by clip id (``service.moments.hit_moments``)."""
    if not knobs.moments or not result.hits or result.vector is None:
        return None
    vector = result.vector

    def read() -> dict[int, Span]:
        with resources.read_session() as session:
            return hit_moments(session, [hit.clip for hit in result.hits], vector)

    return await asyncio.to_thread(read)


async def search_mode(
    resources: Resources, knobs: SearchKnobs, collection: str | Sequence[str] | None, words: bool, where: str
) -> Mode:
    """The mode a search runs in: the one asked for, else hybrid when any video of the searched collections
    has subtitle text (``service.speech``); searches without words are visual."""
    if not words:
        if knobs.mode not in (None, "visual"):
            invalid((where, "mode"), f"mode={knobs.mode}: only for searches in words (q)", knobs.mode)
        return "visual"
    if knobs.mode is not None:
        return knobs.mode
    names = collection_names(collection)

    def read() -> bool:
        with resources.read_session() as session:
            return has_text(session, names)

    return "hybrid" if await asyncio.to_thread(read) else "visual"


async def with_speech(
    resources: Resources,
    index: ServedIndex,
    result: engine.SearchResult,
    query: str,
    mode: Mode,
    options: engine.SearchOptions,
) -> tuple[engine.SearchResult, dict[int, Evidence] | None]:
    """A visual ``result`` as it is, or the page of a speech or hybrid search built from it."""
    if mode == "visual":
        return result, None

    def read() -> tuple[engine.SearchResult, dict[int, Evidence]]:
        only = index.restrict(options.filter)
        with resources.read_session() as session:
            return fused_result(session, result, query, mode, options, only, resources.settings.media_roots)

    return await asyncio.to_thread(read)


def shown_confidence(calibration: ScoreCalibration | None, score: float) -> float | None:
    """A score's confidence as responses show it (None: no calibration applies)."""
    return None if calibration is None else round(float(calibration.confidence(score)), 4)


def moment_out(span: Span, calibration: ScoreCalibration | None) -> Moment:
    return Moment(
        start=span.start, end=span.end, score=round(span.score, 6), confidence=shown_confidence(calibration, span.score)
    )


def calibration_of(resources: Resources) -> ScoreCalibration | None:
    """The served checkpoint's score calibration (None: it has none)."""
    return resources.encoder.calibration if resources.encoder is not None else None


def options_of(knobs: SearchKnobs, node: Node | None, min_score: float | None) -> engine.SearchOptions:
    """The engine's options; ``min_score`` is ``score_floor``'s (min_score and min_confidence in one)."""
    return engine.SearchOptions(
        knobs.k,
        knobs.offset,
        knobs.group_by,
        min_score,
        knobs.nprobe,
        knobs.ef_search,
        node,
        knobs.dedupe_threshold if knobs.dedupe else None,
    )


def body_errors(exc: ValidationError) -> RequestValidationError:
    """The body's validation errors as FastAPI reports them (located under ``body``; raw bytes left out)."""
    errors = []
    for error in exc.errors(include_url=False, include_context=False):
        given = error.get("input")
        errors.append({**error, "loc": ("body", *error["loc"]), "input": None if isinstance(given, bytes) else given})
    return RequestValidationError(errors)


async def liked(
    resources: Resources, like: int | None, exclude_video: bool, viewer: Viewer, where: str
) -> tuple[QueryInput | None, int | None]:
    """The query of ``like=`` (the clip's embedding), and the video to leave out with ``exclude_video``."""
    if like is None:
        if exclude_video:
            invalid((where, "exclude_video"), "exclude_video: only with like (a clip id)", True)
        return None, None
    vector, video_id = await asyncio.to_thread(like_vector, resources, like, viewer)
    return QueryInput(example=vector), video_id if exclude_video else None


@router.get(
    "/search",
    response_model=SearchResponse,
    responses={404: UPLOAD_RESPONSES[404], 422: UPLOAD_RESPONSES[422]},
)
async def search_get(
    resources: ResourcesDep,
    index: IndexDep,
    viewer: ViewerDep,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            pattern=NOT_BLANK,
            description="What to look for, in words (or give `like`).",
            examples=["a red circle moves to the right"],
        ),
    ] = None,
    like: Annotated[int | None, Query(ge=1, le=MAX_ID, description=LIKE_DESCRIPTION)] = None,
    exclude_video: Annotated[bool, Query(description=EXCLUDE_VIDEO_DESCRIPTION)] = False,
    collection: Annotated[str | None, Query(max_length=4000, description=COLLECTION_DESCRIPTION)] = None,
    filter: Annotated[str | None, Query(max_length=4000, description=FILTER_DESCRIPTION)] = None,  # noqa: A002
    dedupe: Annotated[bool, Query(description=DEDUPE_DESCRIPTION)] = False,
    dedupe_threshold: Annotated[
        float, Query(ge=0.0, le=1.0, description=DEDUPE_THRESHOLD_DESCRIPTION)
    ] = DEFAULT_DEDUPE_THRESHOLD,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Results per page.")] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Results to skip (pagination).")] = 0,
    group_by: Annotated[GroupBy | None, Query(description="'video': only the best clip of each video.")] = None,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0, description="Drop results scoring below.")] = None,
    min_confidence: Annotated[float | None, Query(gt=0.0, lt=1.0, description=MIN_CONFIDENCE_DESCRIPTION)] = None,
    moments: Annotated[bool, Query(description=MOMENTS_DESCRIPTION)] = False,
    mode: Annotated[SearchMode | None, Query(description=MODE_DESCRIPTION)] = None,
    nprobe: Annotated[int | None, Query(ge=1, le=MAX_NPROBE, description="IVF lists to visit.")] = None,
    ef_search: Annotated[int | None, Query(ge=1, le=MAX_EF_SEARCH, description="HNSW search depth.")] = None,
) -> SearchResponse:
    """Clips that best match the words ``q``, or that look like the clip ``like``, best first."""
    if (q is None) == (like is None):
        invalid(("query", "q"), "give q (words to look for) or like (a clip id), one of them", q)
    example, excluded = await liked(resources, like, exclude_video, viewer, "query")
    node = search_filter(index, filter_given=filter, collection=collection, exclude_video=excluded, where="query")
    knobs = SearchKnobs(
        dedupe=dedupe,
        dedupe_threshold=dedupe_threshold,
        k=k,
        offset=offset,
        group_by=group_by,
        min_score=min_score,
        min_confidence=min_confidence,
        moments=moments,
        mode=mode,
        nprobe=nprobe,
        ef_search=ef_search,
    )
    used = await search_mode(resources, knobs, collection, q is not None, "query")
    calibration = calibration_of(resources) if example is None else None
    options = options_of(knobs, node, score_floor(knobs, calibration, example is None, "query"))
    query: str | QueryInput = example if example is not None else str(q)
    results, took_ms = await run_search(resources, index, [query], options)
    result, evidence = await with_speech(resources, index, results[0], str(q), used, options)
    roots = resources.settings.media_roots
    found = await found_moments(resources, knobs, result)
    return to_response(
        q,
        took_ms,
        result,
        roots,
        viewer,
        like=like,
        calibration=calibration,
        moments=found,
        mode=used,
        evidence=evidence,
    )


@router.post(
    "/search",
    response_model=SearchResponse | MultiSearchResponse,
    responses=UPLOAD_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/SearchForm"}},
            },
        }
    },
)
async def search_post(
    request: Request, resources: ResourcesDep, index: IndexDep, viewer: ViewerDep
) -> SearchResponse | MultiSearchResponse:
    """The same for a JSON body, where ``q`` may be a list of queries answered together; or, as
    ``multipart/form-data``, search by an uploaded ``image`` or ``video`` (optionally mixed with ``q``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _search_by_upload(request, resources, index, viewer)
    if content_type not in ("", "application/json") and not content_type.endswith("+json"):
        raise HTTPException(415, f"a body of type {content_type}: expected application/json or multipart/form-data")
    raw = await request.body()
    if not raw.strip():
        raise RequestValidationError([{"loc": ("body",), "msg": "Field required", "type": "missing", "input": None}])
    try:
        body = SearchRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise body_errors(exc) from None
    if (body.q is None) == (body.like is None):
        invalid(("body", "q"), "give q (words, or a list of them) or like (a clip id), one of them", body.q)
    example, excluded = await liked(resources, body.like, body.exclude_video, viewer, "body")
    node = search_filter(
        index, filter_given=body.filter, collection=body.collection, exclude_video=excluded, where="body"
    )
    used = await search_mode(resources, body, body.collection, body.q is not None, "body")
    calibration = calibration_of(resources) if example is None else None
    options = options_of(body, node, score_floor(body, calibration, example is None, "body"))
    roots = resources.settings.media_roots
    if example is not None:
        results, took_ms = await run_search(resources, index, [example], options)
        found = await found_moments(resources, body, results[0])
        return to_response(None, took_ms, results[0], roots, viewer, like=body.like, moments=found)
    queries: list[str | QueryInput] = [body.q] if isinstance(body.q, str) else list(body.q or [])
    results, took_ms = await run_search(resources, index, queries, options)
    answers = []
    for query, visual in zip(queries, results, strict=True):
        result, evidence = await with_speech(resources, index, visual, str(query), used, options)
        answers.append(
            to_response(
                str(query),
                took_ms,
                result,
                roots,
                viewer,
                calibration=calibration,
                moments=await found_moments(resources, body, result),
                mode=used,
                evidence=evidence,
            )
        )
    if isinstance(body.q, str):
        return answers[0]
    return MultiSearchResponse(took_ms=round(took_ms, 3), searches=answers)


async def _search_by_upload(
    request: Request, resources: Resources, index: ServedIndex, viewer: Viewer
) -> SearchResponse:
    limits = resources.examples.limits
    try:
        form = await request.form(max_files=2, max_fields=32)
    except HTTPException:
        raise
    except Exception as exc:  # a malformed multipart body
        raise HTTPException(400, f"the form cannot be read: {exc}") from None
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(form.close)
        files = {key: value for key, value in form.multi_items() if isinstance(value, UploadFile)}
        fields: dict[str, Any] = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        for key in ("image", "video"):
            if key in fields:  # sent as a plain field, not a file
                invalid(("body", key), f"{key}: expected a file upload (multipart file part), got a text field")
        unknown = sorted(set(files) - {"image", "video"})
        if unknown:
            invalid(("body", unknown[0]), f"{unknown[0]}: unexpected file; send the example as image or video")
        if len(files) != 1:
            invalid(("body", "image"), "send one example file: image (JPEG, PNG, WebP) or video")
        try:
            params = SearchForm.model_validate(fields)
        except ValidationError as exc:
            raise body_errors(exc) from None
        node = search_filter(
            index, filter_given=params.filter, collection=params.collection, exclude_video=None, where="body"
        )
        ((kind, upload),) = files.items()
        try:
            if kind == "image":
                data = await read_upload(upload, limits.image_bytes, "image")
                vector = await resources.examples.encode_image(data)
            else:
                folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tvr-example-"))
                path = Path(folder) / "upload"
                await save_upload(upload, path, limits.video_bytes, "video")
                vector = await resources.examples.encode_video(path)
        except ExampleRejected as exc:
            if exc.status_code == 422:
                invalid(("body", kind), exc.detail)
            raise HTTPException(exc.status_code, exc.detail) from None
    options = options_of(params, node, score_floor(params, None, False, "body"))
    used = await search_mode(resources, params, params.collection, params.q is not None, "body")
    query = QueryInput(text=params.q, example=vector, example_weight=params.image_weight if params.q else 1.0)
    results, took_ms = await run_search(resources, index, [query], options)
    result, evidence = await with_speech(resources, index, results[0], str(params.q), used, options)
    found = await found_moments(resources, params, result)
    roots = resources.settings.media_roots
    return to_response(
        params.q, took_ms, result, roots, viewer, example=kind, moments=found, mode=used, evidence=evidence
    )


def install_schemas(app: FastAPI) -> None:
    """Put the two request bodies of ``POST /search`` into the app's OpenAPI components (the route reads its
    body itself, so FastAPI does not know them)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SearchRequest, SearchForm):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
