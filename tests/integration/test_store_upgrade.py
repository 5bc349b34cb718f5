"""Upgrades of the embedded store: a data directory written with the previous release's schema
opens with the current server's store, is migrated, and keeps every record and batch id.

The previous layout is kept here as DDL text: `OLD_DDL` is what the first release (commit
6dcd5f8, the store's only released layout so far: the columns have not changed since) creates,
and the rows are written with plain SQL, not with the current code. `OLDER_COLUMNS` drops the
last columns to exercise the migration's additive path (`DuckDBStore._migrate`: a column the
current schema has and the file lacks is added with its default), which a future column takes.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from l7scope.contracts.record import L7Record
from l7scope.contracts.timerange import TimeRange
from l7scope.server.columns import to_columns
from l7scope.server.store.base import Filter, SearchQuery, Sort
from l7scope.server.store.duckdb import DuckDBStore

OLD_COLUMNS = """
    "start_time" UINTEGER, "end_time" UINTEGER, "duration_mean" UBIGINT, "duration_max" UBIGINT,
    "latency" UBIGINT, "bytes_in" UBIGINT, "bytes_out" UBIGINT, "count" UBIGINT,
    "src_name_aggr" VARCHAR, "src_namespace" VARCHAR, "src_type" VARCHAR, "source_port_num" USMALLINT,
    "dest_name_aggr" VARCHAR, "dest_namespace" VARCHAR, "dest_type" VARCHAR, "dest_port_num" USMALLINT,
    "dest_service_name" VARCHAR, "dest_service_namespace" VARCHAR, "dest_service_port_name" VARCHAR,
    "dest_service_port" USMALLINT, "url" VARCHAR, "response_code" VARCHAR, "method" VARCHAR,
    "user_agent" VARCHAR, "type" VARCHAR, "host" VARCHAR, "schema_version" UINTEGER,
    "collector_type" VARCHAR, "collector_name" VARCHAR, "protocol" VARCHAR, "tls_sni" VARCHAR,
    "grpc_status" VARCHAR, "duration_p50" UBIGINT, "duration_p90" UBIGINT, "duration_p99" UBIGINT,
    "requests_seen" UBIGINT, "requests_logged" UBIGINT, "hist_b" USMALLINT[], "hist_c" UBIGINT[]
"""
#: the first layout without its last 8 columns (protocol ... hist_c)
OLDER_COLUMNS = OLD_COLUMNS[:OLD_COLUMNS.index('"protocol"')].rstrip().rstrip(",")
N = 5000
OLD_BATCHES = [f"node-a-{i}" for i in range(20)]


def _write_old(path: Path, columns: str) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(f"CREATE TABLE l7 ({columns})")
        con.execute("CREATE TABLE l7_batches (batch_id VARCHAR PRIMARY KEY, received_at UBIGINT)")
        names = [c.split('"')[1] for c in columns.split(",") if '"' in c]
        values = {"start_time": "1000 + i", "end_time": "1005 + i", "count": "1 + i % 7",
                  "bytes_in": "i * 10", "url": "'svc:80/p' || (i % 13)::VARCHAR",
                  "response_code": "CASE WHEN i % 10 = 0 THEN '503' ELSE '200' END",
                  "src_namespace": "'shop'", "src_name_aggr": "'web-*'", "src_type": "'wep'",
                  "dest_namespace": "'pay'", "dest_name_aggr": "'api-*'", "dest_type": "'wep'",
                  "method": "'GET'", "type": "'HTTP/1.1'", "hist_b": "[80::USMALLINT]",
                  "hist_c": "[(1 + i % 7)::UBIGINT]"}
        select = ", ".join(values.get(n, "''" if "VARCHAR" in _type(columns, n) else "0") for n in names)
        con.execute(f"INSERT INTO l7 SELECT {select} FROM range({N}) t(i)")
        con.executemany("INSERT INTO l7_batches VALUES (?, ?)", [[b, 1005] for b in OLD_BATCHES])
    finally:
        con.close()


def _type(columns: str, name: str) -> str:
    return columns.split(f'"{name}"', 1)[1].split(",", 1)[0]


def _all(store: DuckDBStore) -> SearchQuery:
    return SearchQuery(Filter(TimeRange(0, 10**9)), (Sort("end_time", False),), N + 100, 0)


@pytest.mark.parametrize("columns", [OLD_COLUMNS, OLDER_COLUMNS], ids=["previous", "older"])
def test_current_store_opens_migrates_and_keeps_every_record(tmp_path: Path, columns: str) -> None:
    path = tmp_path / "l7.duckdb"
    _write_old(path, columns)
    store = DuckDBStore(path)
    try:
        stats = store.stats()
        assert (stats.records, stats.oldest_end_time, stats.newest_end_time) == (N, 1005, 1004 + N)
        res = store.search(_all(store))
        assert res.total_hits == N
        assert res.total_requests == sum(1 + i % 7 for i in range(N))
        hits = res.hits
        assert [h["end_time"] for h in hits] == list(range(1005, 1005 + N))
        assert hits[10]["url"] == "svc:80/p10" and hits[10]["response_code"] == "503"
        assert hits[11]["bytes_in"] == 110 and hits[11]["src_namespace"] == "shop"
        # columns the old file lacked were added with their defaults
        assert hits[0]["protocol"] == "" and hits[0]["requests_seen"] == 0
        # batch ids survive: a node agent retrying an acknowledged batch is still deduplicated
        new = to_columns([L7Record(start_time=9000, end_time=9001, count=1, url="svc:80/new")])
        assert store.insert_once(OLD_BATCHES[3], new, now=9001) is False
        assert store.insert_once("node-a-new", new, now=9001) is True
        assert store.stats().records == N + 1
    finally:
        store.close()
    # and reopened once more (the migration is idempotent)
    store = DuckDBStore(path)
    try:
        assert store.stats().records == N + 1
    finally:
        store.close()
