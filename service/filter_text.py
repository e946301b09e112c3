"""The text form of search filters (``GET /search?filter=``): a lark grammar, parsed into the tree of
``service.filters`` and checked there. The language itself is described in ``service/filters.py``."""

from __future__ import annotations

import math
import re
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from .filters import MAX_FILTER_CHARS, AllOf, AnyOf, Comparison, FilterError, Negation, Node, Scalar, check

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
