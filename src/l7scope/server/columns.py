"""Records <-> columns: the batch shape both stores insert, and rows back into records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgspec.structs import astuple

from l7scope.contracts.record import FIELDS, L7Record
from l7scope.server.fields import COLUMNS, HIST_BUCKETS, HIST_COUNTS, HIST_FIELD, TABLE_COLUMNS

#: A batch as columns: every name of fields.TABLE_COLUMNS -> one list with a value per record.
ColumnBatch = dict[str, list[Any]]


def to_columns(records: Sequence[L7Record]) -> ColumnBatch:
    """Column lists in TABLE_COLUMNS order; the histogram becomes two parallel lists.

    Transposes with msgspec's astuple + zip (C loops), not one getattr per field and record."""
    n = len(COLUMNS)
    if not records:
        return {name: [] for name in TABLE_COLUMNS}
    hist_pos = FIELDS.index(HIST_FIELD)
    assert tuple(f for f in FIELDS if f != HIST_FIELD) == tuple(COLUMNS)
    cols = list(zip(*map(astuple, records), strict=True))
    hists = cols.pop(hist_pos)
    out: ColumnBatch = {name: list(cols[i]) for i, name in enumerate(COLUMNS)}
    assert len(out) == n
    out[HIST_BUCKETS] = [[int(k) for k in h] if h else [] for h in hists]
    out[HIST_COUNTS] = [list(h.values()) if h else [] for h in hists]
    return out


def batch_len(batch: ColumnBatch) -> int:
    return len(batch[TABLE_COLUMNS[0]])


def row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    """A stored row (TABLE_COLUMNS order) as a record dict in wire form."""
    n = len(COLUMNS)
    rec = dict(zip(COLUMNS, row[:n], strict=True))
    buckets, counts = row[n] or [], row[n + 1] or []
    rec["duration_hist"] = {str(b): int(c) for b, c in zip(buckets, counts, strict=False) if c}
    return rec
