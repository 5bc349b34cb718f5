"""The selector tree (contracts.selector) rendered as a parameterized SQL boolean expression.

`to_sql()` renders every value as a bound parameter (`SqlParams`, which each store provides in
its placeholder style); field names come only from the allow-list and are quoted.
"""

from __future__ import annotations

import re
from typing import Final, Literal, Protocol

from l7scope.contracts.fields import COLUMNS
from l7scope.contracts.selector import And, Cmp, In, Node, Or


class SqlParams(Protocol):
    """Collects bound values for one statement; each store provides its placeholder style."""

    def add(self, value: object) -> str:
        """Register `value`; return the placeholder to put in the SQL text."""
        ...

    def regex(self, column_sql: str, placeholder: str) -> str:
        """SQL that is true when the column matches the (anchored) regex placeholder."""
        ...

    def text_match(self, kind: Literal["prefix", "suffix", "contains"], column_sql: str,
                   placeholder: str) -> str:
        """SQL that is true when the column starts with / ends with / contains the value."""
        ...


def column(name: str) -> str:
    """The quoted SQL name of an allow-listed column."""
    if name not in COLUMNS:
        raise ValueError(f"not a column: {name!r}")
    return f'"{name}"'


def to_sql(node: Node, params: SqlParams) -> str:
    """Render a tree as a SQL boolean expression; every value is a bound parameter."""
    if isinstance(node, Cmp):
        col = column(node.field)
        if node.op in ("=~", "!~"):
            expr = _regex_sql(col, str(node.value), params)
            return expr if node.op == "=~" else f"(NOT {expr})"
        return f"({col} {node.op} {params.add(node.value)})"
    if isinstance(node, In):
        phs = ", ".join(params.add(v) for v in node.values)
        return f"({column(node.field)} {'NOT IN' if node.negated else 'IN'} ({phs}))"
    if isinstance(node, And):
        return "(" + " AND ".join(to_sql(n, params) for n in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(to_sql(n, params) for n in node.items) + ")"
    return f"(NOT {to_sql(node.item, params)})"


_META: Final = r"\.^$*+?()[]{}|"
_LITERAL_SHAPE: Final = re.compile(
    r"(\.\*)?((?:[^\\.^$*+?()\[\]{}|]|\\[\\.^$*+?()\[\]{}|/\-])*)(\.\*)?", re.DOTALL)


def literal_shape(pattern: str) -> tuple[str, str] | None:
    """('exact'|'prefix'|'suffix'|'contains', literal) when a whole-value regex is just a literal
    with optional `.*` at either end (e.g. `5.*`, `.*/cart.*`); None otherwise."""
    m = _LITERAL_SHAPE.fullmatch(pattern)
    if m is None:
        return None
    lead, body, tail = m.group(1), m.group(2), m.group(3)
    literal = re.sub(r"\\(.)", r"\1", body)
    kind = {(False, False): "exact", (False, True): "prefix", (True, False): "suffix",
            (True, True): "contains"}[(bool(lead), bool(tail))]
    return kind, literal


def _regex_sql(col: str, pattern: str, params: SqlParams) -> str:
    """`=~` with whole-value semantics; `.` also matches newlines. Literal shapes use the
    engines' string functions instead of a regex over every row."""
    shape = literal_shape(pattern)
    if shape is not None:
        kind, literal = shape
        if kind == "exact":
            return f"({col} = {params.add(literal)})"
        return params.text_match(kind, col, params.add(literal))  # type: ignore[arg-type]
    return params.regex(col, params.add(f"^(?s:{pattern})$"))


