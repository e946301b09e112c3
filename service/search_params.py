"""From a search request's fields to what the engine takes: the filter tree (``filter``, ``collection``,
``exclude_video`` in one conjunction) and the example vector of ``like=``.

Every problem is a 422 in the shape of request validation errors, naming the field and what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from indexer.collections import check_collection_name
from indexer.errors import IndexerError
from indexer.queries import clip_embedding

from .access import Viewer, inside_roots
from .filter_text import parse_filter
from .filters import Comparison, FilterError, Node, all_of, filter_from_json
from .resources import Resources
from .schemas import SearchKnobs
from .search import ServedIndex

if TYPE_CHECKING:
    from model.calibration import ScoreCalibration


def invalid(where: Sequence[str | int], message: str, given: Any = None) -> NoReturn:
    """Answer 422 for ``where`` (e.g. ``("query", "filter")``) with ``message`` as the whole sentence."""
    raise RequestValidationError([{"loc": tuple(where), "msg": message, "type": "invalid", "input": given}])


def score_floor(knobs: SearchKnobs, calibration: ScoreCalibration | None, words_only: bool, where: str) -> float | None:
    """The least score a search keeps: ``min_score``, raised to the score at which ``min_confidence`` begins
    (the calibration increases with the score, so the two thresholds are one)."""
    wanted = knobs.min_confidence
    if wanted is None:
        return knobs.min_score
    if not words_only:
        invalid(
            (where, "min_confidence"),
            "min_confidence: only for searches in words (q) alone; a search by example has no calibrated confidence",
            wanted,
        )
    if calibration is None:
        invalid(
            (where, "min_confidence"),
            "min_confidence: the served checkpoint has no score calibration; fit one with `tvr confidence fit`",
            wanted,
        )
    floor = calibration.score_at(wanted)
    return floor if knobs.min_score is None else max(floor, knobs.min_score)


def filter_of(given: str | BaseModel | None, where: Sequence[str]) -> Node | None:
    """The checked tree of a ``filter`` field, in the text form or as JSON (``schemas.FilterNode``)."""
    if given is None:
        return None
    try:
        if isinstance(given, str):
            return parse_filter(given)
        return filter_from_json(given.model_dump(by_alias=True))
    except FilterError as exc:
        invalid(where, str(exc), given if isinstance(given, str) else None)


def collection_names(given: str | Sequence[str] | None) -> list[str] | None:
    """The names of a ``collection`` field (a list, or comma-separated), unchecked; None when absent."""
    if given is None:
        return None
    names = [part.strip() for part in given.split(",")] if isinstance(given, str) else list(given)
    return [name for name in names if name]


def collections_of(given: str | Sequence[str] | None, index: ServedIndex, where: Sequence[str]) -> Node | None:
    """``collection IN (...)`` for a list of names (or comma-separated ones); 422 for a malformed name or one
    the served index does not hold."""
    names = collection_names(given)
    if names is None:
        return None
    if not names:
        invalid(where, "collection: expected one or more collection names, comma-separated", given)
    try:
        for name in names:
            check_collection_name(name, "collection")
    except IndexerError as exc:
        invalid(where, str(exc), given)
    known = index.clip_filter.attributes.collections if index.clip_filter is not None else []
    unknown = sorted(set(names) - set(known))
    if unknown:
        invalid(
            where,
            f"collection: no collection named {', '.join(unknown)} in the served index "
            f"(collections: {', '.join(known) or 'none'}; GET /collections lists them)",
            given,
        )
    return Comparison("collection", "in", tuple(dict.fromkeys(names)))


def like_vector(resources: Resources, clip_id: int, viewer: Viewer) -> tuple[np.ndarray, int]:
    """The stored embedding of an indexed clip the client may see, and its video's id (blocking: run it off
    the event loop); 404 otherwise."""
    from fastapi import HTTPException

    with resources.read_session() as session:
        found = clip_embedding(session, clip_id)
    roots = resources.settings.media_roots
    if found is None or (roots and not inside_roots(found.path, roots)):
        raise HTTPException(404, f"like={clip_id}: no indexed clip with that id")
    return np.frombuffer(found.embedding, dtype=np.float32), found.video_id  # stored L2-normalised


def search_filter(
    index: ServedIndex,
    *,
    filter_given: str | BaseModel | None,
    collection: str | Sequence[str] | None,
    exclude_video: int | None,
    where: str,
) -> Node | None:
    """One tree for the request's ``filter``, ``collection`` and ``exclude_video`` (a video id to leave out)."""
    excluded = None if exclude_video is None else Comparison("video_id", "!=", exclude_video)
    return all_of(
        filter_of(filter_given, (where, "filter")),
        collections_of(collection, index, (where, "collection")),
        excluded,
    )
