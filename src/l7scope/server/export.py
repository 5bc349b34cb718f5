"""Export: the records a selector and time range pick, as one file the store's engine writes.

`POST /api/v1/l7/logs/export` (docs/api.md, "Export") validates the body here, adds the reader's
namespace scope to the filter exactly as every query does (store/sql.where), has the store write
a temporary file (DuckDB `COPY ... TO`, chDB `INTO OUTFILE`, a ClickHouse server's blocks into
pyarrow's Parquet writer) and streams it back; the file is deleted after the answer. Memory stays
bounded: the engine writes to disk and the answer is read from it in chunks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from l7scope.server.query import QueryService, TimeRangeBody, _Model, _validate
from l7scope.server.store.base import EXPORT_FORMATS, ExportStore, Filter, Store

MEDIA_TYPES: Final = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}


class ExportBody(_Model):
    selector: str | None = None
    time_range: TimeRangeBody | None = None
    format: Literal["parquet", "jsonl"] = "parquet"
    exclude_unlogged: bool = Field(default=False)


@dataclass(frozen=True)
class ExportRequest:
    filter: Filter
    format: str


def parse(queries: QueryService, body: object, namespaces: frozenset[str] | None) -> ExportRequest:
    """The validated request (RequestError for a bad body, selector or time range)."""
    req = _validate(ExportBody, body)
    assert req.format in EXPORT_FORMATS
    tr = queries._time_range(req.time_range)
    flt = Filter(tr, queries._selector(req.selector), exclude_unlogged=req.exclude_unlogged,
                 namespaces=namespaces)
    return ExportRequest(flt, req.format)


def write(store: Store, req: ExportRequest, directory: str | None = None) -> str:
    """The path of a new temporary file holding the export; the caller deletes it."""
    if not isinstance(store, ExportStore):
        raise NotImplementedError(f"the {store.kind} store cannot export")
    fd, path = tempfile.mkstemp(prefix="l7export-", suffix=f".{req.format}", dir=directory)
    os.close(fd)
    os.unlink(path)  # the engines create the file themselves (and refuse to overwrite one)
    try:
        store.export(req.filter, req.format, path)
    except BaseException:
        remove(path)
        raise
    return path


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
