"""Search filters: the ``filter=`` language and its JSON form, parsed into one checked tree.

Text form (``GET /search?filter=``)::

    meta.year >= 2023 AND (collection IN (news, sport) OR NOT codec = h264) AND meta.tags:sports

* comparisons ``FIELD OP VALUE`` with ``=  !=  <  <=  >  >=``; ``FIELD IN (v1, v2, ...)``; list membership
  ``FIELD:VALUE`` (true when the field is a list holding the value, or a single value equal to it);
* joined by ``AND``, ``OR``, ``NOT`` (any case; ``NOT`` binds tightest, then ``AND``, then ``OR``) and
  parentheses;
* values: numbers, ``true``/``false``, bare words (letters, digits, ``_ . - +``) or strings in double
  quotes (``\\"`` and ``\\\\`` escape) when they hold spaces or operators; dates in ISO 8601
  (``2024-05-01``, ``"2024-05-01T12:00:00Z"``: quoted when they hold a ``:``; no zone means UTC).

JSON form (``POST /search``): ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}`` and
``{"field": F, "op": OP, "value": V}`` with ``op`` one of the operators above, ``in`` (a list value) or
``:``. Both become the same tree (``Comparison``, ``AllOf``, ``AnyOf``, ``Negation``) and are checked
against ``FIELDS`` the same way; every problem is a ``FilterError`` naming where and what. The text form's
parser is ``filter_text.parse_filter``.

A missing value (a video without ``meta.year``; a catalog field never measured) makes every comparison
false, so ``NOT`` of a comparison is true there, and ``a != b`` is exactly ``NOT a = b``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Literal

MAX_FILTER_CHARS = 4000
MAX_COMPARISONS = 64
MAX_IN_VALUES = 1000
META_PREFIX = "meta."

Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", ":"]
ORDERING: frozenset[str] = frozenset({"<", "<=", ">", ">="})
Scalar = str | int | float | bool | datetime
Kind = Literal["text", "number", "time", "any"]

# Catalog fields a filter may name, and what their values are (``meta.*`` is "any": the value decides).
FIELDS: dict[str, Kind] = {
    "collection": "text",
    "codec": "text",
    "duration": "number",  # seconds
    "size": "number",  # bytes
    "width": "number",  # pixels as stored
    "height": "number",
    "fps": "number",
    "indexed_at": "time",
    "video_id": "number",
}


class FilterError(ValueError):
    """A filter that cannot be used: the message names the place and the problem."""


@dataclass(frozen=True)
class Comparison:
    field: str
    op: Op
    value: Scalar | tuple[Scalar, ...]  # a tuple for ``in``


@dataclass(frozen=True)
class AllOf:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Negation:
    item: Node


Node = Comparison | AllOf | AnyOf | Negation


def all_of(*nodes: Node | None) -> Node | None:
    """The conjunction of the nodes given (None ones left out); None when none is given."""
    kept = tuple(node for node in nodes if node is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else AllOf(kept)


# --- the JSON form -----------------------------------------------------------------------------------------


def filter_from_json(data: Mapping[str, Any], where: str = "filter") -> Node:
    """The checked tree of a JSON filter (already shaped by ``schemas.FilterNode``, or a plain dict)."""
    return check(_from_json(data, where), where)


def _from_json(data: Any, where: str) -> Node:
    if not isinstance(data, Mapping):
        raise FilterError(f"{where}: expected an object with 'and', 'or', 'not' or 'field', got {data!r}")
    keys = set(data)
    if keys in ({"and"}, {"or"}):
        (key,) = keys
        items = data[key]
        if not isinstance(items, Sequence) or isinstance(items, str) or not items:
            raise FilterError(f"{where}.{key}: expected a non-empty list of filters")
        nodes = tuple(_from_json(item, f"{where}.{key}[{i}]") for i, item in enumerate(items))
        return AllOf(nodes) if key == "and" else AnyOf(nodes)
    if keys == {"not"}:
        return Negation(_from_json(data["not"], f"{where}.not"))
    if keys == {"field", "op", "value"}:
        field, op, value = data["field"], data["op"], data["value"]
        if not isinstance(field, str):
            raise FilterError(f"{where}.field: expected a field name, got {field!r}")
        if op not in ("=", "!=", "<", "<=", ">", ">=", "in", ":"):
            raise FilterError(f"{where}.op: expected one of = != < <= > >= in :, got {op!r}")
        if op == "in":
            if not isinstance(value, Sequence) or isinstance(value, str):
                raise FilterError(f"{where}.value: 'in' takes a list of values, got {value!r}")
            return Comparison(field, op, tuple(value))
        return Comparison(field, op, value)
    raise FilterError(
        f"{where}: expected exactly one of 'and', 'or', 'not', or 'field' with 'op' and 'value'; got keys "
        f"{sorted(keys)}"
    )


# --- checking ----------------------------------------------------------------------------------------------


def check(node: Node, where: str) -> Node:
    """The tree with its values checked against its fields (dates parsed); ``FilterError`` otherwise."""
    count = _count(node)
    if count > MAX_COMPARISONS:
        raise FilterError(f"{where}: {count} comparisons, at most {MAX_COMPARISONS}")
    return _check(node, where)


def _count(node: Node) -> int:
    if isinstance(node, Comparison):
        return 1
    if isinstance(node, Negation):
        return _count(node.item)
    return sum(_count(item) for item in node.items)


def _check(node: Node, where: str) -> Node:
    if isinstance(node, Negation):
        return Negation(_check(node.item, where))
    if isinstance(node, AllOf | AnyOf):
        return type(node)(tuple(_check(item, where) for item in node.items))
    kind = field_kind(node.field, where)
    place = f"{where}: {node.field} {node.op}"
    if node.op == "in":
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        if not values or len(values) > MAX_IN_VALUES:
            raise FilterError(f"{place}: expected 1 to {MAX_IN_VALUES} values, got {len(values)}")
        return Comparison(node.field, "in", tuple(_value(kind, node.field, "=", v, place) for v in values))
    if isinstance(node.value, tuple | list):
        raise FilterError(f"{place}: expected one value, got a list (use IN for several)")
    if node.op == ":" and kind != "any":
        raise FilterError(f"{place}: {node.field} holds one value, not a list; use = or IN")
    return Comparison(node.field, node.op, _value(kind, node.field, node.op, node.value, place))


def field_kind(field: str, where: str = "filter") -> Kind:
    if field.startswith(META_PREFIX) and len(field) > len(META_PREFIX):
        return "any"
    kind = FIELDS.get(field)
    if kind is None:
        known = ", ".join(sorted(FIELDS))
        raise FilterError(f"{where}: unknown field {field!r}; fields: {known}, and meta.KEY for manifest metadata")
    return kind


def _value(kind: Kind, field: str, op: str, value: Any, place: str) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{place}: {value!r} is not a finite number")
    if not isinstance(value, str | int | float | bool):
        raise FilterError(f"{place}: expected a number, string or true/false, got {value!r}")
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FilterError(f"{place}: {field} is a number; cannot compare it with {value!r}")
        return value
    if kind == "time":
        parsed = parse_time(value) if isinstance(value, str) else None
        if parsed is None:
            raise FilterError(
                f'{place}: {field} is a date; expected ISO 8601 such as 2024-05-01 or "2024-05-01T12:00:00Z", '
                f"got {value!r}"
            )
        return parsed
    if kind == "text":
        if not isinstance(value, str) or isinstance(value, bool):
            raise FilterError(f"{place}: {field} is text; cannot compare it with {value!r} (quote it)")
        if op in ORDERING:
            raise FilterError(f"{place}: {field} is text; use = != IN, not {op}")
        return value
    # meta.*: the value's own type decides; an ordering needs a number or a date
    if op in ORDERING and isinstance(value, str):
        parsed = parse_time(value)
        if parsed is None:
            raise FilterError(f"{place}: {op} needs a number or an ISO 8601 date, got {value!r}")
        return parsed
    if op in ORDERING and isinstance(value, bool):
        raise FilterError(f"{place}: {op} needs a number or an ISO 8601 date, got {value!r}")
    return value


_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}([T ][0-9:.]+)?(Z|[+-]\d{2}:?\d{2})?")


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 date or date-time as an aware UTC datetime (no zone: UTC), or None."""
    if not _DATE_LIKE.fullmatch(text.strip()):
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text.strip()), datetime.min.time())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def describe(node: Node) -> str:
    """The tree in the text form (logs, cache keys)."""
    if isinstance(node, Negation):
        return f"NOT ({describe(node.item)})"
    if isinstance(node, AllOf | AnyOf):
        joiner = " AND " if isinstance(node, AllOf) else " OR "
        return "(" + joiner.join(describe(item) for item in node.items) + ")"
    if node.op == "in":
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        return f"{node.field} IN ({', '.join(_shown(v) for v in values)})"
    return f"{node.field} {node.op} {_shown(node.value)}"  # type: ignore[arg-type]


def _shown(value: Scalar) -> str:
    if isinstance(value, datetime):
        return f'"{value.isoformat()}"'
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
