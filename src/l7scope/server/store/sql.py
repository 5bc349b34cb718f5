"""SQL text shared by the DuckDB and ClickHouse stores.

Everything here stays inside the subset both DuckDB and ClickHouse 18.16+ accept
(docs/server.md): quoted identifiers from the allow-list, bound parameters for every value,
explicit GROUP BY expressions, `substring`/`concat`, LIMIT/OFFSET. The few dialect differences
(placeholders, regex match, integer division) go through the `Dialect` a store passes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from l7scope.contracts.fields import COLUMNS
from l7scope.contracts.record import TYPE_UNLOGGED
from l7scope.server.fields import TABLE_COLUMNS
from l7scope.server.store.base import ExprKey, Filter, GroupKey, SearchQuery
from l7scope.server.store.selector_sql import SqlParams, column, to_sql

RESPONSE_CLASS_SQL: Final = (
    "(CASE WHEN length(\"response_code\") = 3 AND substring(\"response_code\", 1, 1) "
    "IN ('1', '2', '3', '4', '5') THEN concat(substring(\"response_code\", 1, 1), 'xx') "
    "ELSE 'no_response' END)"
)
ERRORS_SQL: Final = (
    "sum(CASE WHEN substring(\"response_code\", 1, 1) IN ('4', '5') THEN \"count\" ELSE 0 END)"
)

DURATION_SUM_SQL: Final = '"duration_mean" * "count"'

#: The columns that name a namespace; a scoped reader sees a record only if each of them is
#: empty/excluded or a namespace it may read (docs/security.md, "Authentication in a cluster").
NAMESPACE_COLUMNS: Final = ("src_namespace", "dest_namespace", "dest_service_namespace")
NO_NAMESPACE: Final = ("", "-")


class Dialect(SqlParams, Protocol):
    def int_div(self, expr: str, divisor: int) -> str: ...

    def wide_sum(self, expr: str) -> str:
        """sum(expr) in a type wider than 64 bits (the count-weighted duration sum: each term is
        bounded by contracts.record.MAX_DURATION_SUM_NS, their sum is not)."""
        ...


def where(flt: Filter, d: Dialect) -> str:
    """The WHERE expression of a filter: time range, then the reader's namespace scope, then the
    user's selector in its own parentheses; the parts are ANDed, so the selector can only narrow."""
    parts = [
        f'"end_time" > {d.add(flt.time_range.start)}',
        f'"end_time" <= {d.add(flt.time_range.end)}',
    ]
    if flt.exclude_unlogged:
        parts.append(f'"type" != {d.add(TYPE_UNLOGGED)}')
    if flt.namespaces is not None:
        parts.append(namespace_scope(flt.namespaces, d))
    if flt.selector is not None:
        parts.append(to_sql(flt.selector, d))
    return " AND ".join(f"({p})" for p in parts)


def namespace_scope(namespaces: frozenset[str], d: Dialect) -> str:
    """True for records a reader limited to `namespaces` may see: no `unlogged` record (its counts
    carry no namespace), and each namespace column empty, `-`, or one of `namespaces`."""
    allowed = (*sorted(namespaces), *NO_NAMESPACE)
    cols = " AND ".join(f"({column(c)} IN ({', '.join(d.add(v) for v in allowed)}))"
                        for c in NAMESPACE_COLUMNS)
    return f'("type" != {d.add(TYPE_UNLOGGED)}) AND {cols}'


def select_columns() -> str:
    return ", ".join(f'"{c}"' for c in TABLE_COLUMNS)


def search_page(table: str, q: SearchQuery, d: Dialect) -> str:
    order = ", ".join(f"{column(s.field)} {'DESC' if s.descending else 'ASC'}" for s in q.sort)
    return (
        f"SELECT {select_columns()} FROM {table} WHERE {where(q.filter, d)}"
        f"{' ORDER BY ' + order if order else ''} LIMIT {int(q.limit)} OFFSET {int(q.offset)}"
    )


def export_select(table: str, flt: Filter, d: Dialect) -> str:
    """Every stored column of the records a filter selects, oldest first (an export file)."""
    return f'SELECT {select_columns()} FROM {table} WHERE {where(flt, d)} ORDER BY "end_time"'


def search_total(table: str, q: SearchQuery, d: Dialect) -> str:
    return f'SELECT count(*), sum("count") FROM {table} WHERE {where(q.filter, d)}'


def key_sql(key: GroupKey, d: Dialect) -> str:
    if isinstance(key, ExprKey):
        return f"({key.render(d)})"
    if key == "response_class":
        return RESPONSE_CLASS_SQL
    if key.startswith("time:"):
        interval = int(key[5:])
        return f'({d.int_div(chr(34) + "end_time" + chr(34), interval)} * {interval})'
    if key in COLUMNS:
        return column(key)
    raise ValueError(f"not a group key: {key!r}")


def group_sums(table: str, flt: Filter, keys: Sequence[GroupKey], d: Dialect,
               extra_aggregates: str = "") -> str:
    """One row per group: k0..kn, records, count, bytes_in, bytes_out, weighted duration sum,
    min(duration_mean), max(duration_max), errors[, extra]."""
    key_cols = [f"{key_sql(k, d)} AS k{i}" for i, k in enumerate(keys)]
    select = ", ".join([
        *key_cols,
        "count(*) AS n_records",
        'sum("count") AS n_count',
        'sum("bytes_in") AS n_bytes_in',
        'sum("bytes_out") AS n_bytes_out',
        f"{d.wide_sum(DURATION_SUM_SQL)} AS n_dur_sum",
        'min("duration_mean") AS n_dur_min',
        'max("duration_max") AS n_dur_max',
        f"{ERRORS_SQL} AS n_errors",
    ]) + extra_aggregates
    group = f" GROUP BY {', '.join(f'k{i}' for i in range(len(keys)))}" if keys else ""
    return f"SELECT {select} FROM {table} WHERE {where(flt, d)}{group}"
