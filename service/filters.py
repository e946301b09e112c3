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
against ``FIELDS`` the same way; every problem is a ``FilterError`` naming where and what.

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

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

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


# --- the text form -----------------------------------------------------------------------------------------

_GRAMMAR = r"""
?start: disjunction
?disjunction: conjunction (_OR conjunction)*   -> any_of
?conjunction: negation (_AND negation)*        -> all_of
?negation: _NOT negation                       -> negation
         | atom
?atom: "(" disjunction ")"
     | FIELD OP value                          -> compare
     | FIELD _IN "(" value ("," value)* ")"    -> within
     | FIELD ":" value                         -> has
?value: STRING | WORD

_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
OP: "!=" | "<=" | ">=" | "=" | "<" | ">"
FIELD: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_\-]+)*/
WORD: /[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]*/
STRING: /"(\\.|[^"\\])*"/
%ignore /\s+/
"""

_TERMINALS = {
    "FIELD": "a field name",
    "OP": "an operator (= != < <= > >=)",
    "WORD": "a value",
    "STRING": "a value",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "COLON": "':'",
    "_OR": "OR",
    "_AND": "AND",
    "_NOT": "NOT",
    "_IN": "IN",
    "$END": "the end",
}


def _word_value(text: str) -> Scalar:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


@v_args(inline=True)
class _ToTree(Transformer[Token, Node]):
    def STRING(self, token: Token) -> str:  # noqa: N802 (lark calls terminal callbacks by name)
        return re.sub(r"\\(.)", r"\1", str(token)[1:-1])

    def WORD(self, token: Token) -> Scalar:  # noqa: N802
        return _word_value(str(token))

    def compare(self, field: Token, op: Token, value: Scalar) -> Node:
        return Comparison(str(field), str(op), value)  # type: ignore[arg-type]

    def within(self, field: Token, *values: Scalar) -> Node:
        return Comparison(str(field), "in", tuple(values))

    def has(self, field: Token, value: Scalar) -> Node:
        return Comparison(str(field), ":", value)

    def negation(self, item: Node) -> Node:
        return Negation(item)

    def all_of(self, *items: Node) -> Node:
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def any_of(self, *items: Node) -> Node:
        return items[0] if len(items) == 1 else AnyOf(tuple(items))


_PARSER = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


def parse_filter(text: str) -> Node:
    """The checked tree of a text filter; ``FilterError`` says where it goes wrong."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter: {len(text)} characters, at most {MAX_FILTER_CHARS}")
    if not text.strip():
        raise FilterError("filter: empty; expected a comparison such as duration >= 60")
    try:
        tree = _ToTree().transform(_PARSER.parse(text))
    except UnexpectedInput as exc:
        raise FilterError(_syntax_message(text, exc)) from None
    except VisitError as exc:  # a transformer callback failed: not expected, but never a 500
        raise FilterError(f"filter: {exc.orig_exc}") from None
    return check(tree, "filter")


def _syntax_message(text: str, exc: UnexpectedInput) -> str:
    position = getattr(exc, "pos_in_stream", None)
    at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    if isinstance(exc, UnexpectedEOF) or position is None or at_end:
        where = "at the end"
        expected = _expected(getattr(exc, "expected", ()))
    else:
        near = text[position : position + 20]
        where = f"at character {position + 1} ({near!r})"
        if isinstance(exc, UnexpectedCharacters):
            expected = _expected(exc.allowed or ())
        elif isinstance(exc, UnexpectedToken):
            expected = _expected(exc.expected or ())
        else:
            expected = ""
    hint = f": expected {expected}" if expected else ""
    return f"filter: cannot read it {where}{hint} (example: meta.year >= 2023 AND collection IN (news, sport))"


def _expected(names: Any) -> str:
    shown = sorted({_TERMINALS.get(name, name.lower()) for name in names})
    return " or ".join(shown)


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
