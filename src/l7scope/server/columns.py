"""Records <-> columns: the batch shape both stores insert, and rows back into records."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, chain
from operator import attrgetter
from typing import Any, Final

from l7scope.contracts.record import FIELDS, L7Record
from l7scope.server.fields import COLUMNS, HIST_FIELD

#: A batch as columns: every scalar column name (fields.COLUMNS) -> one list with a value per
#: record, plus fields.HIST_FIELD -> the records' histograms (wire form, {"bucket": count}).
#: Each store turns the histograms into its two array columns (hist_lists / hist_flat).
ColumnBatch = dict[str, list[Any]]


_GETTERS: Final = tuple((name, attrgetter(name)) for name in FIELDS)


def to_columns(records: Sequence[L7Record]) -> ColumnBatch:
    """One C-level `map(attrgetter)` pass per field (about twice as fast as astuple + zip(*),
    whose zip over thousands of row iterators dominates)."""
    return {name: list(map(get, records)) for name, get in _GETTERS}


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
