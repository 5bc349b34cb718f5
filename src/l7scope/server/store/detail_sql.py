"""Request detail storage shared by the DuckDB and ClickHouse stores: the table's columns, the
query and the rows <-> records conversion (contracts/detail.py owns the record).

One row per `DetailRecord`; its two header maps are stored as JSON text (no Map type: ClickHouse
18.16 has none). Reads are always bounded (`MAX_LIMIT` rows) and scoped like the L7 records:
`sql.namespace_scope` over the same three namespace columns. Retention removes rows by
`end_time`, the same cut-off as the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from l7scope.contracts import detail as dc
from l7scope.contracts.timerange import TimeRange
from l7scope.server.store import sql
from l7scope.server.store.sql import Dialect

TABLE: Final = "l7_detail"
MAX_LIMIT: Final = 1000

#: column -> "text" | "int", in the record's field order.
COLUMNS: Final[dict[str, str]] = {
    f.name: ("text" if f.name in dc.HEADER_FIELDS or isinstance(f.default, str) else "int")
    for f in msgspec.structs.fields(dc.DetailRecord)
}
#: Fields a search may match exactly (besides the drill-down's).
SEARCH_FIELDS: Final = ("request_id", "trace_id")
_json = msgspec.json.Encoder()
_headers = msgspec.json.Decoder(dict[str, str])


@dataclass(frozen=True)
class DetailQuery:
    """Which detail rows to read: a time range on `end_time`, the reader's namespaces (None:
    all), exact matches on DRILL_FIELDS / SEARCH_FIELDS, at most `limit` rows, newest first."""

    time_range: TimeRange
    namespaces: frozenset[str] | None
    match: tuple[tuple[str, str | int], ...]
    limit: int = 100


class DetailStore(Protocol):
    """What a store implements for request detail (DuckDBStore, ClickHouseStore)."""

    def insert_details(self, batch_id: str | None, columns: dict[str, list[Any]], now: int) -> bool:
        """Store the rows (`to_columns`) unless `batch_id` was stored before (False)."""
        ...

    def details(self, q: DetailQuery) -> list[dict[str, Any]]: ...


def select(table: str, q: DetailQuery, d: Dialect) -> str:
    parts = [f'"end_time" > {d.add(q.time_range.start)}', f'"end_time" <= {d.add(q.time_range.end)}']
    if q.namespaces is not None:
        parts.append(sql.namespace_scope(q.namespaces, d))
    for name, value in q.match:
        if name not in COLUMNS or name in dc.HEADER_FIELDS:
            raise ValueError(f"not a detail column: {name!r}")
        parts.append(f'"{name}" = {d.add(value)}')
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    where = " AND ".join(f"({p})" for p in parts)
    limit = max(1, min(int(q.limit), MAX_LIMIT))
    return f'SELECT {cols} FROM {table} WHERE {where} ORDER BY "end_time" DESC, "time" DESC LIMIT {limit}'


def to_columns(records: Sequence[dc.DetailRecord]) -> dict[str, list[Any]]:
    """Column-major values of `records` (headers as JSON text)."""
    out: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for r in records:
        for c in COLUMNS:
            v = getattr(r, c)
            out[c].append(_json.encode(v).decode() if c in dc.HEADER_FIELDS else v)
    return out


def from_row(row: Sequence[Any]) -> dict[str, Any]:
    """One stored row as the API answers it (the record's fields; headers as objects)."""
    out = dict(zip(COLUMNS, row, strict=True))
    for c in dc.HEADER_FIELDS:
        try:
            out[c] = _headers.decode(out[c] or "{}")
        except (msgspec.DecodeError, msgspec.ValidationError):
            out[c] = {}
    for c, kind in COLUMNS.items():
        if kind == "int":
            out[c] = int(out[c] or 0)
    return out
