"""Request detail on the server (docs/detail.md): the bulk body of detail records, and the
query of `REQUESTS_PATH` (one aggregated record's requests, or a search by request / trace id).

Transport-free like `query.py`: api.py reads the body and calls these in a worker thread. The
reader's namespaces always go into the query (never through the body).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pydantic import Field

from l7scope.contracts import detail as dc
from l7scope.contracts.bulk import BulkResult, Rejection
from l7scope.server.metrics import Metrics
from l7scope.server.query import QueryService, RequestError, TimeRangeBody, _Model, _validate
from l7scope.server.store import detail_sql

MAX_LISTED_REJECTIONS: Final = 100
MAX_RECORDS_PER_BODY: Final = 20_000


#: Called with the records of a stored (not duplicate) body, e.g. OtlpExporter.submit_details.
DetailSink = Callable[[list[dc.DetailRecord]], object]


def ingest(store: detail_sql.DetailStore, metrics: Metrics, body: bytes, batch_id: str | None,
           now: int, sink: DetailSink | None = None) -> tuple[BulkResult, int]:
    """Validate each NDJSON line (`dc.decode_record`: bounds, REDACTED headers dropped), store
    the good ones once per batch id, then hand them to `sink`. Returns the answer and the number
    of rejected lines."""
    good: list[dc.DetailRecord] = []
    rejected: list[Rejection] = []
    n_rejected = 0
    for i, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        if len(good) >= MAX_RECORDS_PER_BODY:
            n_rejected += 1
            err = f"over {MAX_RECORDS_PER_BODY} detail records in one body"
        else:
            try:
                good.append(dc.decode_record(line))
                continue
            except dc.DetailError as e:
                n_rejected += 1
                err = str(e)[:300]
        if len(rejected) < MAX_LISTED_REJECTIONS:
            rejected.append(Rejection(line=i, error=err))
    stored = store.insert_details(batch_id, detail_sql.to_columns(good), now)
    if not stored:
        metrics.inc("detail_duplicate_batches")
        return BulkResult(accepted=0, rejected=[], duplicate=True), 0
    metrics.inc("detail_records_accepted", len(good))
    metrics.inc("detail_records_rejected", n_rejected)
    if sink is not None and good:
        sink(good)
    return BulkResult(accepted=len(good), rejected=rejected), n_rejected


class RecordKey(_Model):
    """The drill-down: the fields of an aggregated record (contracts/detail.DRILL_FIELDS)."""

    end_time: int = Field(ge=0, le=2**32 - 1)
    host: str = Field(max_length=256)
    src_name_aggr: str = Field(max_length=256)
    src_namespace: str = Field(max_length=256)
    dest_service_name: str = Field(max_length=256)
    dest_service_namespace: str = Field(max_length=256)
    url: str = Field(max_length=4096)
    method: str = Field(max_length=256)
    response_code: str = Field(max_length=256)
    grpc_status: str = Field(default="", max_length=256)


class RequestsBody(_Model):
    record: RecordKey | None = None
    request_id: str | None = Field(default=None, min_length=1, max_length=dc.MAX_ID)
    trace_id: str | None = Field(default=None, min_length=1, max_length=32)
    time_range: TimeRangeBody | None = None
    limit: int = Field(default=100, ge=1, le=detail_sql.MAX_LIMIT)


def requests(queries: QueryService, body: object, namespaces: frozenset[str] | None) -> dict[str, Any]:
    """`{"requests": [...], "truncated": bool}` for exactly one of record, request_id, trace_id."""
    b = _validate(RequestsBody, body)
    given = [x for x in (b.record, b.request_id, b.trace_id) if x is not None]
    if len(given) != 1:
        raise RequestError("bad_request", "give exactly one of record, request_id, trace_id")
    match: tuple[tuple[str, str | int], ...]
    if b.record is not None:
        match = tuple((f, getattr(b.record, f)) for f in dc.DRILL_FIELDS)
        # the record's own interval; an explicit time_range may still narrow it
        tr = queries._time_range(b.time_range or TimeRangeBody(
            **{"from": b.record.end_time - 1, "to": b.record.end_time}))
    else:
        match = (("request_id", b.request_id),) if b.request_id else (("trace_id", (b.trace_id or "").lower()),)
        tr = queries._time_range(b.time_range)
    store = queries.store
    if not hasattr(store, "details"):
        raise RequestError("unsupported", "this store keeps no request detail", status=501)
    q = detail_sql.DetailQuery(tr, namespaces, match, b.limit + 1)
    rows = store.details(q)
    return {"requests": rows[: b.limit], "truncated": len(rows) > b.limit}
