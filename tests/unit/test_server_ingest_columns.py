"""The column-wise ingest path gives the same results as the record-wise rules it replaces:
to_columns, the Arrow table handed to DuckDB, the per-column checks (with line-by-line
rejections when one fails), the edge counters, and the GC pause."""

from __future__ import annotations

import gc
from operator import attrgetter
from pathlib import Path

import pyarrow as pa

from l7scope.contracts.fields import COLUMNS
from l7scope.contracts.record import FIELDS, TYPE_UNLOGGED, L7Record, encode_record
from l7scope.server.columns import hist_flat, to_columns
from l7scope.server.graph import dest_node, source_node
from l7scope.server.ingest import Ingestor, _parse_fast, parse_body
from l7scope.server.metrics import Metrics
from l7scope.server.store.arrow_batch import ARROW_SCHEMA, to_arrow
from l7scope.server.store.duckdb import DuckDBStore

NOW = 1_790_000_000  # the server's time for parse_body (records here are older)


def _recs() -> list[L7Record]:
    out = []
    for i in range(30):
        out.append(L7Record(
            start_time=100 + i, end_time=105 + i, count=1 + i, bytes_in=i * 1000, url=f"svc:80/p{i % 4}",
            src_namespace="shop" if i % 3 else "-", src_name_aggr=f"w{i % 5}-*", src_type="wep" if i % 3 else "net",
            dest_namespace="pay", dest_name_aggr="api-*", dest_type="wep",
            dest_service_namespace="pay" if i % 2 else "", dest_service_name="api" if i % 2 else "",
            response_code=("200", "503", "404", "")[i % 4], type=TYPE_UNLOGGED if i == 7 else "HTTP/1.1",
            duration_hist={str(80 + i % 3): 1 + i, "65535": 2} if i % 5 else {},
        ))
    return out


def test_to_columns_is_one_list_per_field_in_schema_order() -> None:
    recs = _recs()
    cols = to_columns(recs)
    assert list(cols) == list(FIELDS)
    assert cols == {name: list(map(attrgetter(name), recs)) for name in FIELDS}
    assert to_columns([]) == {name: [] for name in FIELDS}


def test_arrow_table_holds_the_same_values_as_a_plain_build() -> None:
    for recs in (_recs(), _recs()[:1], _recs()[3:5]):
        cols = to_columns(recs)
        offsets, buckets, counts = hist_flat(cols)
        off = pa.array(offsets, pa.int32())
        plain = pa.table([*(cols[c] for c in COLUMNS),
                          pa.ListArray.from_arrays(off, pa.array(buckets, pa.uint16())),
                          pa.ListArray.from_arrays(off, pa.array(counts, pa.uint64()))], schema=ARROW_SCHEMA)
        fast = to_arrow(cols)
        assert fast.column_names == plain.column_names
        assert fast.cast(ARROW_SCHEMA).equals(plain)
    # A constant text column travels as a one-entry dictionary; a varying one as plain strings.
    fast = to_arrow(to_columns(_recs()))
    assert pa.types.is_dictionary(fast.column("dest_type").type)
    assert fast.column("url").type == pa.string()


def test_integer_too_wide_for_its_column_is_a_rejected_line(tmp_path: Path) -> None:
    good = [encode_record(r) for r in _recs()[:3]]
    too_late = encode_record(L7Record(start_time=1, end_time=1 << 32))  # UInt32 column
    too_big = encode_record(L7Record(start_time=1, end_time=2, bytes_out=1 << 64))  # UInt64 column
    big_count = encode_record(L7Record(start_time=1, end_time=2, duration_hist={"3": 1 << 64}))
    body = b"\n".join([good[0], too_late, good[1], too_big, big_count, good[2]]) + b"\n"
    assert _parse_fast(body, NOW) is None
    parsed = parse_body(body, NOW)
    assert [r.line for r in parsed.rejected] == [2, 4, 5] and parsed.rejected_total == 3
    assert "end_time" in parsed.rejected[0].error and "bytes_out" in parsed.rejected[1].error
    assert parsed.columns == to_columns(parsed.records) and len(parsed.records) == 3
    store = DuckDBStore(tmp_path / "s.duckdb")
    try:
        result, rejected = Ingestor(store, Metrics()).ingest(body, "b-1")
        assert (result.accepted, rejected, store.stats().records) == (3, 3, 3)
    finally:
        store.close()


def _edges_per_record(recs: list[L7Record]) -> dict[tuple[str, str, str], int]:
    """The edge rule applied record by record: the reference for the column-wise counting."""
    out: dict[tuple[str, str, str], int] = {}
    for r in recs:
        if r.type == TYPE_UNLOGGED:
            continue
        key = (source_node(r.src_type, r.src_namespace, r.src_name_aggr, ()).id,
               dest_node(r.dest_type, r.dest_namespace, r.dest_name_aggr, r.dest_service_namespace,
                         r.dest_service_name, ()).id,
               f"{c[0]}xx" if len(c := r.response_code) == 3 and c[0] in "12345" else "no_response")
        out[key] = out.get(key, 0) + r.count
    return out


def test_edge_counters_from_columns_match_the_per_record_rule() -> None:
    recs = _recs()
    m = Metrics()
    m.observe_columns(to_columns(recs))
    assert m.edges == _edges_per_record(recs) and m.edges
    assert m.counters["unlogged_requests"] == 8 == sum(r.count for r in recs if r.type == TYPE_UNLOGGED)


def test_gc_is_left_as_it_was() -> None:
    body = b"".join(encode_record(r) + b"\n" for r in _recs())
    assert gc.isenabled()
    assert len(parse_body(body, NOW).records) == 30
    assert gc.isenabled()
    gc.disable()
    try:
        assert len(parse_body(body + b"{bad\n", NOW).records) == 30
        assert not gc.isenabled()
    finally:
        gc.enable()
