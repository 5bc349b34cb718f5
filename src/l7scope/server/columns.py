"""Records <-> columns: the batch shape both stores insert, and rows back into records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate, chain
from typing import Any, Final

from l7scope.contracts.fields import COLUMNS, HIST_FIELD
from l7scope.contracts.record import FIELDS, L7Record

#: A batch as columns: every scalar column name (fields.COLUMNS) -> one list with a value per
#: record, plus fields.HIST_FIELD -> the records' histograms (wire form, {"bucket": count}).
#: Each store turns the histograms into its two array columns (hist_lists / hist_flat).
ColumnBatch = dict[str, list[Any]]


def _columns_function() -> Callable[[Sequence[L7Record]], ColumnBatch]:
    """`to_columns` written out: one list comprehension per field, `[r.<field> for r in rs]`,
    generated from FIELDS. A literal attribute load in a comprehension is specialised by the
    interpreter to a direct slot read; it is about 1.5x faster than `map(attrgetter(name), rs)`
    per field (and 3x faster than astuple + zip(*))."""
    for name in FIELDS:
        if not name.isidentifier():
            raise AssertionError(f"field name {name!r} is not an identifier")
    body = "".join(f"        {name!r}: [r.{name} for r in rs],\n" for name in FIELDS)
    namespace: dict[str, Any] = {}
    exec(f"def to_columns(rs):\n    return {{\n{body}    }}\n", namespace)
    fn: Callable[[Sequence[L7Record]], ColumnBatch] = namespace["to_columns"]
    return fn


_to_columns: Final = _columns_function()


def to_columns(records: Sequence[L7Record]) -> ColumnBatch:
    return _to_columns(records)


def hist_lists(batch: ColumnBatch) -> tuple[list[list[int]], list[list[int]]]:
    """Per record: bucket indexes and counts (for engines that take nested lists)."""
    hists: list[dict[str, int]] = batch[HIST_FIELD]
    return ([[int(k) for k in h] for h in hists], [list(h.values()) for h in hists])


def hist_flat(batch: ColumnBatch) -> tuple[list[int], list[int], list[int]]:
    """Offsets (len n+1), flat bucket indexes and flat counts: list arrays without nesting."""
    hists: list[dict[str, int]] = batch[HIST_FIELD]
    offsets = [0, *accumulate(map(len, hists))]
    buckets = list(map(int, chain.from_iterable(hists)))
    counts = list(chain.from_iterable(map(dict.values, hists)))
    return offsets, buckets, counts


def batch_len(batch: ColumnBatch) -> int:
    return len(batch[FIELDS[0]])


def row_to_record(row: Sequence[Any]) -> dict[str, Any]:
    """A stored row (TABLE_COLUMNS order) as a record dict in wire form."""
    n = len(COLUMNS)
    rec = dict(zip(COLUMNS, row[:n], strict=True))
    buckets, counts = row[n] or [], row[n + 1] or []
    rec["duration_hist"] = {str(b): int(c) for b, c in zip(buckets, counts, strict=False) if c}
    return rec
