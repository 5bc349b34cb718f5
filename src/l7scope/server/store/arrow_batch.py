"""A ColumnBatch as an Arrow table for the DuckDB store, built with as little per-value work
as possible (this is the ingest hot path).

- Integer columns go through `array.array` (one C loop that also range-checks each value into
  the column's width) and become Arrow arrays over that buffer without another copy:
  about 2.5x faster than `pa.array(list, type)`.
- Text columns whose values are all equal in this batch (collector, type, protocol, excluded
  fields: about half of them in real batches) become a one-entry dictionary array, so the
  value is converted and UTF-8-checked once instead of once per row. Other text columns are
  `pa.array(list, pa.string())`.
- Histograms become two list columns sharing one offsets buffer (hist_flat).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from itertools import islice
from typing import Any, Final

import pyarrow as pa

from l7scope.contracts.fields import COLUMNS
from l7scope.server.columns import ColumnBatch, hist_flat
from l7scope.server.fields import HIST_BUCKETS, HIST_COUNTS, int_width

_ARROW_INT: Final = {"u16": pa.uint16(), "u32": pa.uint32(), "u64": pa.uint64()}
# array.array type codes of the same widths (Linux/x86-64 and aarch64: H=2, I=4, Q=8 bytes).
_CODE: Final = {pa.uint16(): "H", pa.uint32(): "I", pa.uint64(): "Q", pa.int32(): "i"}
_I32: Final = pa.int32()
_STR: Final = pa.string()

#: The schema of the table handed to DuckDB (plain strings; a batch's constant text columns
#: are dictionary-encoded, which DuckDB reads as the same VARCHAR).
ARROW_SCHEMA: Final = pa.schema(
    [(c, _STR if k == "text" else _ARROW_INT[int_width(c)]) for c, k in COLUMNS.items()]
    + [(HIST_BUCKETS, pa.list_(pa.uint16())), (HIST_COUNTS, pa.list_(pa.uint64()))]
)
_NAMES: Final = ARROW_SCHEMA.names
_TYPES: Final = tuple((c, k == "text", ARROW_SCHEMA.field(c).type) for c, k in COLUMNS.items())


def int_array(values: list[int], typ: pa.DataType) -> pa.Array:
    """Raises OverflowError when a value does not fit the width (never for validated records)."""
    buf = array(_CODE[typ], values)
    return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(buf)])


def text_array(values: list[str]) -> pa.Array:
    n = len(values)
    # Two probes first, so most varying columns skip the full pass; list.count is one C loop
    # (pointer compares when the values are one object, as schema defaults are).
    first = values[0] if n > 1 else None
    if first is not None and values[-1] == first and values[n // 2] == first and values.count(first) == n:
        zeros = pa.py_buffer(bytes(4 * n))
        return pa.DictionaryArray.from_arrays(pa.Array.from_buffers(_I32, n, [None, zeros]),
                                              pa.array(values[:1], _STR))
    return pa.array(values, _STR)


def to_arrow(batch: ColumnBatch) -> pa.Table:
    arrays = [text_array(batch[c]) if text else int_array(batch[c], typ) for c, text, typ in _TYPES]
    offsets, buckets, counts = hist_flat(batch)
    off = int_array(offsets, _I32)
    arrays.append(pa.ListArray.from_arrays(off, int_array(buckets, pa.uint16())))
    arrays.append(pa.ListArray.from_arrays(off, int_array(counts, pa.uint64())))
    return pa.Table.from_arrays(arrays, names=_NAMES)


def write_parquet(path: str, rows: Iterable[tuple[Any, ...]], chunk: int) -> None:
    """Rows in ARROW_SCHEMA's column order to a Parquet file, `chunk` rows per row group (the
    ClickHouse store's export from a server: pyarrow's writer, bounded memory)."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, ARROW_SCHEMA) as w:
        it = iter(rows)
        while block := list(islice(it, chunk)):
            cols = list(zip(*block, strict=True))
            w.write_table(pa.Table.from_arrays(
                [pa.array(c, f.type) for c, f in zip(cols, ARROW_SCHEMA, strict=True)],
                schema=ARROW_SCHEMA))
