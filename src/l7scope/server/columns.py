"""Records <-> columns: the batch shape both stores insert, and rows back into records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from l7scope.contracts.record import L7Record
from l7scope.server.fields import COLUMNS, HIST_BUCKETS, HIST_COUNTS, TABLE_COLUMNS

#: A batch as columns: every name of fields.TABLE_COLUMNS -> one list with a value per record.
ColumnBatch = dict[str, list[Any]]


def to_columns(records: Sequence[L7Record]) -> ColumnBatch:
    """Column lists in TABLE_COLUMNS order; the histogram becomes two parallel lists."""
    out: ColumnBatch = {name: [getattr(r, name) for r in records] for name in COLUMNS}
    buckets: list[list[int]] = []
    counts: list[list[int]] = []
    for r in records:
        h = r.duration_hist
        if h:
            items = sorted((int(k), v) for k, v in h.items() if v)
            buckets.append([k for k, _ in items])
            counts.append([v for _, v in items])
        else:
            buckets.append([])
            counts.append([])
    out[HIST_BUCKETS] = buckets
    out[HIST_COUNTS] = counts
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
