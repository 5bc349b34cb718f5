"""One contract for every store: DuckDB (file), ClickHouse (MergeTree) and ClickHouse through a
Distributed table over a real two-shard cluster (two clickhouse-server processes this suite
starts), and the ClickHouse store on chDB's embedded current ClickHouse engine (chdb-core). Expected values are computed in Python from the same records."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import msgspec
import pytest

from contract import chserver
from l7scope.contracts import latency
from l7scope.contracts.detail import DetailRecord
from l7scope.contracts.record import L7Record
from l7scope.contracts.selector import parse
from l7scope.contracts.timerange import TimeRange
from l7scope.server.columns import to_columns
from l7scope.server.store import detail_sql
from l7scope.server.store.base import Filter, SearchQuery, Sort, Store
from l7scope.testing import record_gen

T0 = 1_700_000_000
ALL = TimeRange(0, 2**32 - 1)


@pytest.fixture(scope="session")
def ch_servers() -> Iterator[list[chserver.Server]]:
    if chserver.binary() is None:
        pytest.skip("clickhouse-server is not installed")
    with tempfile.TemporaryDirectory(prefix="l7ch-") as d:
        servers = chserver.start(Path(d))
        try:
            yield servers
        finally:
            chserver.stop(servers)


Opener = Callable[[], Store]


def _chdb_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("chdb") is not None


@pytest.fixture(params=["duckdb", "clickhouse", "clickhouse-distributed", "chdb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function that opens (or re-opens) the same store."""
    opened: list[Store] = []
    if request.param == "duckdb":
        from l7scope.server.store.duckdb import DuckDBStore

        def open_() -> Store:
            for s in opened:
                s.close()
            opened.append(DuckDBStore(tmp_path / "l7.duckdb"))
            return opened[-1]
    elif request.param == "chdb":
        # Current ClickHouse (chdb-core's embedded engine) running the ClickHouse store's SQL.
        if not _chdb_installed():
            pytest.fail("chdb-core is not installed (pinned in pyproject.toml's dev extra)")
        from l7scope.server.store.clickhouse import ClickHouseStore

        def open_() -> Store:
            for s in opened:
                s.close()
            opened.append(ClickHouseStore(f"chdb://{tmp_path / 'chdb'}"))
            return opened[-1]
    else:
        request.applymarker(pytest.mark.clickhouse)
        servers = request.getfixturevalue("ch_servers")
        from l7scope.server.store.clickhouse import ClickHouseStore

        db = f"t_{uuid.uuid4().hex[:12]}"
        cluster = chserver.CLUSTER if request.param == "clickhouse-distributed" else None

        def open_() -> Store:
            opened.append(ClickHouseStore(f"clickhouse://127.0.0.1:{servers[0].tcp_port}/{db}", cluster=cluster))
            return opened[-1]
    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


def sample(n: int = 400, *, seed: int = 7) -> list[L7Record]:
    topo = record_gen.topology(namespaces=4, services_per_ns=3, edges=20, seed=seed)
    return record_gen.records(topo, n, T0, T0 + 600, seed=seed, unlogged_share=0.03)


def q(selector: str = "", *, tr: TimeRange = ALL, sort: tuple[Sort, ...] = (Sort("end_time", True),),
      limit: int = 100, offset: int = 0) -> SearchQuery:
    return SearchQuery(Filter(tr, parse(selector)), sort, limit, offset)


def test_insert_then_search_total_and_paging(store: Store) -> None:
    recs = sample()
    store.insert(to_columns(recs))
    res = store.search(q(limit=50))
    assert res.total_hits == len(recs)
    assert res.total_requests == sum(r.count for r in recs)
    assert len(res.hits) == 50
    ends = [h["end_time"] for h in res.hits]
    assert ends == sorted(ends, reverse=True) and ends[0] == max(r.end_time for r in recs)
    last = store.search(q(limit=50, offset=len(recs) - 10))
    assert len(last.hits) == 10 and last.total_hits == len(recs)
    assert store.search(q(limit=50, offset=len(recs) + 5)).hits == []


def test_hits_are_whole_records(store: Store) -> None:
    rec = sample(1)[0]
    store.insert(to_columns([rec]))
    [hit] = store.search(q()).hits
    assert hit == _as_wire(rec)


def _as_wire(rec: L7Record) -> dict[str, object]:
    from l7scope.contracts.record import to_dict

    d = to_dict(rec)
    d["duration_hist"] = latency.to_wire(latency.from_wire(rec.duration_hist))
    return d


def test_selector_filters_match_python(store: Store) -> None:
    recs = sample()
    store.insert(to_columns(recs))
    cases: list[tuple[str, Callable[[L7Record], bool]]] = [
        ('dest_namespace = "shop"', lambda r: r.dest_namespace == "shop"),
        ('response_code =~ "5.*"', lambda r: r.response_code.startswith("5") and len(r.response_code) == 3),
        ('method IN ("POST", "PUT") AND NOT response_code = "201"',
         lambda r: r.method in ("POST", "PUT") and r.response_code != "201"),
        ("count > 5 OR bytes_in <= 100", lambda r: r.count > 5 or r.bytes_in <= 100),
        ('type = "unlogged"', lambda r: r.type == "unlogged"),
        ('url !~ ".*/cart.*" AND dest_service_name != ""',
         lambda r: "/cart" not in r.url and r.dest_service_name != ""),
        ("response_code NOT IN (200, 201)", lambda r: r.response_code not in ("200", "201")),
        ('response_code =~ "50[0-9]|404"', lambda r: r.response_code in ("500", "503", "404")),
        ('url =~ ".*:80/.*"', lambda r: ":80/" in r.url),
        ('url =~ ".*/cart"', lambda r: r.url.endswith("/cart")),
        ('dest_service_name =~ "check.*"', lambda r: r.dest_service_name.startswith("check")),
    ]
    for sel, pred in cases:
        res = store.search(q(sel, limit=1000))
        want = [r for r in recs if pred(r)]
        assert res.total_hits == len(want), sel
        assert res.total_requests == sum(r.count for r in want), sel


def test_time_range_is_from_exclusive_to_inclusive(store: Store) -> None:
    recs = [L7Record(start_time=T0 + i - 5, end_time=T0 + i, count=1, url=f"/{i}") for i in range(10)]
    store.insert(to_columns(recs))
    res = store.search(q(tr=TimeRange(T0 + 2, T0 + 5), sort=(Sort("end_time", False),)))
    assert [h["end_time"] for h in res.hits] == [T0 + 3, T0 + 4, T0 + 5]


def test_sort_by_other_fields(store: Store) -> None:
    recs = sample(100)
    store.insert(to_columns(recs))
    res = store.search(q(sort=(Sort("bytes_out", True),), limit=10))
    assert [h["bytes_out"] for h in res.hits] == sorted((r.bytes_out for r in recs), reverse=True)[:10]
    res = store.search(q(sort=(Sort("url", False), Sort("end_time", False)), limit=5))
    assert [h["url"] for h in res.hits] == sorted(r.url for r in recs)[:5]


def test_hostile_and_unicode_values_round_trip(store: Store) -> None:
    urls = ["'; DROP TABLE l7; --", 'x") OR 1=1 --', "%(p0)s", "$p1", "/straße/日本/\u202e", "a\\b"]
    recs = [L7Record(start_time=T0, end_time=T0 + 1, count=1, url=u, user_agent=u) for u in urls]
    store.insert(to_columns(recs))
    from l7scope.contracts.selector import quote

    for u in urls:
        res = store.search(q(f"url = {quote(u)}"))
        assert res.total_hits == 1 and res.hits[0]["url"] == u and res.hits[0]["user_agent"] == u
    assert store.stats().records == len(urls)
    store.insert(to_columns([L7Record(start_time=T0, end_time=T0 + 1, count=1, url="zz\nq")]))
    assert store.search(q('url =~ "zz.*"')).total_hits == 1  # `.` matches a newline too
    assert store.search(q('url =~ "zz.q"')).total_hits == 1


def test_group_sums_and_merged_histograms(store: Store) -> None:
    recs = sample()
    store.insert(to_columns(recs))
    flt = Filter(ALL, parse('type != "unlogged"'))
    rows = {g.key: g for g in store.group(flt, ["dest_service_namespace", "response_class"], True)}
    want: dict[tuple[str, str], list[L7Record]] = {}
    for r in recs:
        if r.type == "unlogged":
            continue
        cls = f"{r.response_code[0]}xx" if len(r.response_code) == 3 else "no_response"
        want.setdefault((r.dest_service_namespace, cls), []).append(r)
    assert set(rows) == set(want)
    for key, rs in want.items():
        g = rows[key]
        assert g.records == len(rs)
        assert g.count == sum(r.count for r in rs)
        assert g.bytes_in == sum(r.bytes_in for r in rs)
        assert g.bytes_out == sum(r.bytes_out for r in rs)
        assert g.duration_weighted_sum == sum(r.duration_mean * r.count for r in rs)
        assert g.duration_min == min(r.duration_mean for r in rs)
        assert g.duration_max == max(r.duration_max for r in rs)
        assert g.errors == sum(r.count for r in rs if r.response_code[:1] in ("4", "5"))
        assert g.hist == latency.merged(latency.from_wire(r.duration_hist) for r in rs)


def test_group_by_time_bucket_and_no_keys(store: Store) -> None:
    recs = sample()
    store.insert(to_columns(recs))
    rows = store.group(Filter(ALL), ["time:60"], False)
    want: dict[int, int] = {}
    for r in recs:
        want[r.end_time // 60 * 60] = want.get(r.end_time // 60 * 60, 0) + r.count
    assert {int(g.key[0]): g.count for g in rows} == want
    [total] = store.group(Filter(ALL), [], False)
    assert total.count == sum(r.count for r in recs)
    assert store.group(Filter(TimeRange(0, 10)), [], False) == []


def test_duplicate_batches_are_stored_once_and_remembered_after_reopen(opener: Opener) -> None:
    store = opener()
    recs = sample(50)
    assert store.insert_once("batch-1", to_columns(recs), T0) is True
    assert store.insert_once("batch-1", to_columns(recs), T0) is False
    assert store.insert_once("batch-2", to_columns(recs[:5]), T0) is True
    assert store.stats().records == 55
    again = opener()
    assert again.insert_once("batch-1", to_columns(recs), T0) is False
    assert again.stats().records == 55


def test_a_body_in_pieces_is_stored_once_and_a_duplicate_reads_no_piece(store: Store) -> None:
    recs = sample(90)
    consumed: list[int] = []

    def pieces() -> Iterator[dict[str, list[object]]]:
        for i in range(0, 90, 30):
            consumed.append(i)
            yield to_columns(recs[i:i + 30])

    assert store.insert_batches("body-1", pieces(), T0) is True
    assert consumed == [0, 30, 60] and store.stats().records == 90
    consumed.clear()
    assert store.insert_batches("body-1", pieces(), T0) is False
    assert consumed == [] and store.stats().records == 90  # the duplicate check comes first
    assert store.insert_batches(None, pieces(), T0) is True  # no id: no check
    assert store.search(q()).total_hits == 180


def test_retention_removes_old_records_only(store: Store) -> None:
    old = [L7Record(start_time=T0 - 86400 * 3, end_time=T0 - 86400 * 3 + i, count=1) for i in range(20)]
    mid = [L7Record(start_time=T0 - 100, end_time=T0 - 100 + i, count=1) for i in range(10)]
    new = [L7Record(start_time=T0, end_time=T0 + i, count=1) for i in range(10)]
    store.insert(to_columns(old + mid + new))
    store.delete_before(T0 - 95)  # keeps mid records with end_time >= T0-95 (5 of them)
    deadline = time.monotonic() + 20  # ClickHouse deletes by an asynchronous mutation
    while store.stats().records != 15 and time.monotonic() < deadline:
        time.sleep(0.1)
    st = store.stats()
    assert st.records == 15
    assert st.oldest_end_time == T0 - 95


def test_stats_and_ping(store: Store) -> None:
    store.ping()
    empty = store.stats()
    assert empty.records == 0 and empty.oldest_end_time is None
    store.insert(to_columns(sample(10)))
    st = store.stats()
    assert st.records == 10 and st.oldest_end_time is not None and st.newest_end_time is not None


def test_empty_insert_is_a_no_op(store: Store) -> None:
    store.insert(to_columns([]))
    assert store.stats().records == 0


@pytest.mark.clickhouse
def test_distributed_table_spreads_rows_over_both_shards(ch_servers: list[chserver.Server]) -> None:
    from clickhouse_driver import Client

    from l7scope.server.store.clickhouse import LOCAL, ClickHouseStore

    db = f"t_{uuid.uuid4().hex[:12]}"
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{ch_servers[0].tcp_port}/{db}", cluster=chserver.CLUSTER)
    try:
        store.insert(to_columns(sample(400)))
        per_shard = []
        for s in ch_servers:
            c = Client(host="127.0.0.1", port=s.tcp_port, database=db)
            per_shard.append(c.execute(f"SELECT count() FROM {LOCAL}")[0][0])
            c.disconnect()
        assert sum(per_shard) == 400 and all(n > 50 for n in per_shard), per_shard
        assert store.stats().records == 400
    finally:
        store.close()


@pytest.mark.clickhouse
def test_clickhouse_migration_adds_missing_columns(ch_servers: list[chserver.Server]) -> None:
    from clickhouse_driver import Client

    from l7scope.server.store.clickhouse import LOCAL, ClickHouseStore

    db = f"t_{uuid.uuid4().hex[:12]}"
    url = f"clickhouse://127.0.0.1:{ch_servers[0].tcp_port}/{db}"
    ClickHouseStore(url).close()
    c = Client(host="127.0.0.1", port=ch_servers[0].tcp_port, database=db)
    c.execute(f'ALTER TABLE {LOCAL} DROP COLUMN "grpc_status"')
    c.execute(f'ALTER TABLE {LOCAL} DROP COLUMN "requests_logged"')
    store = ClickHouseStore(url)
    try:
        cols = {r[0] for r in c.execute(f"SELECT name FROM system.columns WHERE database = '{db}' AND table = '{LOCAL}'")}
        assert {"grpc_status", "requests_logged"} <= cols
        store.insert(to_columns(sample(5)))
        assert store.search(q('grpc_status = ""')).total_hits == 5
    finally:
        store.close()
        c.disconnect()


def test_duckdb_migration_adds_missing_columns(tmp_path: Path) -> None:
    import duckdb

    from l7scope.server.store.duckdb import DuckDBStore

    path = tmp_path / "old.duckdb"
    DuckDBStore(path).close()
    con = duckdb.connect(str(path))
    con.execute('ALTER TABLE l7 DROP COLUMN "tls_sni"')
    con.close()
    store = DuckDBStore(path)
    try:
        store.insert(to_columns(sample(5)))
        assert store.search(q('tls_sni = ""')).total_hits == 5
    finally:
        store.close()


@pytest.mark.parametrize("expanded", [set(), {"shop"}, {"shop", "payments", "-"}, {"*"}])
def test_graph_node_ids_in_sql_match_the_python_rules(store: Store, expanded: set[str]) -> None:
    from l7scope.server import graph

    recs = sample(300)
    odd = [  # hep/net endpoints, service unknown, half-known service, "-" namespaces
        L7Record(start_time=T0, end_time=T0 + 1, count=1, src_type="hep", src_namespace="-",
                 src_name_aggr="node-1", dest_type="net", dest_namespace="-", dest_name_aggr="pub"),
        L7Record(start_time=T0, end_time=T0 + 1, count=1, src_namespace="shop", src_name_aggr="a-*",
                 dest_namespace="payments", dest_name_aggr="p-*", dest_service_name="pay"),
        L7Record(start_time=T0, end_time=T0 + 1, count=1, src_namespace="", src_name_aggr="pvt",
                 src_type="net", dest_namespace="shop", dest_name_aggr="w-*"),
        L7Record(start_time=T0, end_time=T0 + 1, count=1, dest_type="hep", dest_name_aggr="h1",
                 dest_service_namespace="-", dest_service_name="x"),
    ]
    store.insert(to_columns(recs + odd))
    rows = store.group(Filter(ALL, parse('type != "unlogged"')), graph.graph_keys(expanded), False)
    got = {(str(g.key[0]), str(g.key[1])) for g in rows}
    want = {(graph.source_node(r.src_type, r.src_namespace, r.src_name_aggr, expanded).id,
             graph.dest_node(r.dest_type, r.dest_namespace, r.dest_name_aggr, r.dest_service_namespace,
                             r.dest_service_name, expanded).id)
            for r in recs + odd if r.type != "unlogged"}
    assert got == want


def test_records_at_the_contract_bounds_sum_without_overflow(store: Store) -> None:
    """A thousand records each at every bound of contracts.record: every sum of the aggregation
    and the service graph answers (the poison of issue 13 was one record with count = 2^63)."""
    from l7scope.contracts import record
    from l7scope.server.query import QueryService

    mean = record.MAX_DURATION_SUM_NS // record.MAX_COUNT
    recs = [L7Record(start_time=T0, end_time=T0 + 1, count=record.MAX_COUNT, bytes_in=record.MAX_BYTES,
                     bytes_out=record.MAX_BYTES, duration_mean=mean, duration_max=record.MAX_DURATION_NS,
                     latency=record.MAX_DURATION_SUM_NS, requests_seen=record.MAX_COUNT,
                     duration_hist={"3": record.MAX_COUNT}, response_code="500", url=f"/p{i % 3}",
                     src_namespace="a", src_name_aggr="c-*", src_type="wep", dest_namespace="b",
                     dest_name_aggr="s-*", dest_type="wep", dest_service_namespace="b", dest_service_name="s")
            for i in range(1000)]
    store.insert(to_columns(recs))
    (g,) = store.group(Filter(ALL), [], True)
    assert g.count == 1000 * record.MAX_COUNT and g.errors == g.count
    assert g.bytes_in == g.bytes_out == 1000 * record.MAX_BYTES
    assert g.duration_weighted_sum == pytest.approx(1000 * mean * record.MAX_COUNT, rel=1e-9)
    assert g.duration_max == record.MAX_DURATION_NS and g.hist == {3: 1000 * record.MAX_COUNT}
    qs = QueryService(store, clock=lambda: T0 + 60)
    tr = {"from": T0 - 60, "to": T0 + 60}
    out = qs.servicegraph({"time_range": tr})
    (edge,) = [e for e in out["edges"] if e["kind"] == "traffic"]
    assert edge["totals"]["count"] == 1000 * record.MAX_COUNT
    assert edge["totals"]["mean_duration"] == pytest.approx(mean, rel=1e-9)
    agg = qs.aggregation({"time_range": tr, "group_by": ["url"]})
    assert sorted(x["count"] for x in agg["groups"]) == [333 * record.MAX_COUNT, 333 * record.MAX_COUNT,
                                                         334 * record.MAX_COUNT]


@pytest.mark.parametrize("allowed", [frozenset({"shop"}), frozenset({"shop", "payments"}), frozenset()])
def test_namespace_scope_matches_python_and_no_selector_widens_it(store: Store, allowed: frozenset[str]) -> None:
    """A scoped reader's filter (server/store/sql.namespace_scope): every named namespace allowed,
    no unlogged record; the user's selector is ANDed outside it, in search, totals and groups."""
    recs = sample()
    recs.append(L7Record(start_time=T0, end_time=T0 + 1, count=1, src_namespace="shop",
                         dest_namespace="-", dest_service_namespace="payments"))
    store.insert(to_columns(recs))

    def visible(r: L7Record) -> bool:
        names = {r.src_namespace, r.dest_namespace, r.dest_service_namespace} - {"", "-"}
        return r.type != "unlogged" and names <= allowed

    want = [r for r in recs if visible(r)]
    assert 0 < len(want) < len(recs) or not allowed
    # each selector below is true for every record: whatever they say, the scope decides
    for sel in ("", 'dest_namespace = "shop" OR count >= 0', 'NOT (src_namespace = "x")',
                'type = "unlogged" OR url =~ ".*"'):
        base = parse(sel)
        res = store.search(SearchQuery(Filter(ALL, base, namespaces=allowed), (Sort("end_time", True),),
                                       1000, 0))
        assert res.total_hits == len(want), (sel, allowed)
        assert res.total_requests == sum(r.count for r in want), sel
        assert all({h["src_namespace"], h["dest_namespace"], h["dest_service_namespace"]} - {"", "-"}
                   <= allowed for h in res.hits)
        rows = store.group(Filter(ALL, base, namespaces=allowed), ["dest_namespace"], False)
        assert sum(g.count for g in rows) == sum(r.count for r in want), sel


@pytest.mark.clickhouse
def test_clickhouse_statement_timeout_stops_a_long_query(ch_servers: list[chserver.Server]) -> None:
    from l7scope.server.cancel import QueryCancelled
    from l7scope.server.store.clickhouse import ClickHouseStore, _Params

    s = ClickHouseStore(f"clickhouse://127.0.0.1:{ch_servers[0].tcp_port}/t_{uuid.uuid4().hex[:12]}",
                        statement_timeout_s=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(QueryCancelled) as e:
            s._query("SELECT count() FROM numbers(1000000000000) WHERE modulo(number, 7) = 3", _Params())
        assert e.value.reason == "timeout" and time.monotonic() - t0 < 10
        s.ping()  # the store still answers
    finally:
        s.close()


@pytest.fixture(params=["clickhouse", "chdb"])
def ch_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    from l7scope.server.store.clickhouse import ClickHouseStore

    if request.param == "chdb":
        s = ClickHouseStore(f"chdb://{tmp_path / 'chdb'}")
    else:
        request.applymarker(pytest.mark.clickhouse)
        servers = request.getfixturevalue("ch_servers")
        s = ClickHouseStore(f"clickhouse://127.0.0.1:{servers[0].tcp_port}/t_{uuid.uuid4().hex[:12]}")
    yield s
    s.close()


def test_a_retry_after_a_crash_between_records_and_id_is_deduplicated_where_the_server_can(
        ch_store: Store) -> None:
    """The crash window of insert_batches: the records were written, the batch id was not. A
    current server drops the retried records by their deduplication token; 18.16 stores them
    twice (documented in docs/server.md), never zero times."""
    from l7scope.server.store.clickhouse import V_DEDUP_TOKEN, ClickHouseStore

    assert isinstance(ch_store, ClickHouseStore)
    batch = to_columns(sample(50))
    ch_store.insert(batch, token="b-1/0")  # the first attempt, cut off before the id
    assert ch_store.insert_batches("b-1", [batch], T0) is True  # the retry
    assert ch_store.insert_batches("b-1", [batch], T0) is False  # now remembered
    copies = 1 if ch_store.has(V_DEDUP_TOKEN) else 2
    assert ch_store.stats().records == 50 * copies
    other = to_columns(sample(50, seed=8))
    assert ch_store.insert_batches("b-2", [other], T0) is True  # another id is not deduplicated
    assert ch_store.stats().records == 50 * copies + 50


def test_the_store_uses_what_the_server_version_has(ch_store: Store) -> None:
    from l7scope.server.store.clickhouse import LOCAL, V_LOW_CARDINALITY, ClickHouseStore

    assert isinstance(ch_store, ClickHouseStore)
    types = dict(ch_store._client().execute(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = %(t)s",
        {"t": LOCAL}))
    if ch_store.location.startswith("chdb:"):
        assert ch_store.version >= (26, 0)
    else:
        assert ch_store.version == (18, 16)
    low = ch_store.has(V_LOW_CARDINALITY)
    assert (types["dest_namespace"] == "LowCardinality(String)") is low
    assert types["url"] == "String"
    ch_store.insert(to_columns(sample(20)))
    ch_store.delete_before(2**32 - 1)  # lightweight DELETE on current servers, a mutation on 18.16
    assert ch_store.stats().records == 0


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_file_read_back_by_duckdb_equals_search(store: Store, tmp_path: Path, fmt: str) -> None:
    """The engine's export file holds exactly the records search returns for the same filter."""
    import json

    import duckdb

    from l7scope.server.store.base import ExportStore

    assert isinstance(store, ExportStore)
    recs = sample(300)
    store.insert(to_columns(recs))
    sel = 'dest_namespace = "shop" OR response_code =~ "5.*"'
    flt = Filter(TimeRange(T0 + 100, T0 + 500), parse(sel), namespaces=frozenset({"shop", "payments"}))
    hits = store.search(SearchQuery(flt, (Sort("end_time", False),), 10_000, 0)).hits
    assert 10 < len(hits) < len(recs)
    out = tmp_path / f"out.{fmt}"
    store.export(flt, fmt, str(out))
    if fmt == "parquet":
        cur = duckdb.sql(f"SELECT * FROM read_parquet('{out}')")
    else:
        cur = duckdb.sql(f"SELECT * FROM read_json('{out}', format='newline_delimited')")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    if fmt == "jsonl":
        assert len(out.read_text().splitlines()) == len(hits)
        json.loads(out.read_text().splitlines()[0])
    got = sorted(({k: v for k, v in r.items() if k not in ("hist_b", "hist_c")}
                  | {"duration_hist": {str(b): int(c) for b, c in zip(r["hist_b"], r["hist_c"], strict=True)}}
                  for r in rows), key=lambda d: json.dumps(d, sort_keys=True))
    want = sorted(({k: (v if k != "duration_hist" else {str(b): int(c) for b, c in v.items()})
                    for k, v in h.items()} for h in hits), key=lambda d: json.dumps(d, sort_keys=True))
    assert [int(g["end_time"]) for g in got] and got == want
    for col in ("src_namespace", "dest_namespace", "dest_service_namespace"):
        assert {r[col] for r in rows} <= {"shop", "payments", "", "-"}


# --- request detail (store/detail_sql.py, docs/detail.md) ------------------------------------

def _details() -> list[DetailRecord]:
    out = []
    for i in range(30):
        ns = ("shop", "payments", "ops")[i % 3]
        out.append(DetailRecord(
            start_time=T0 + i // 10, end_time=T0 + 1 + i // 10, host="node-a", src_name_aggr="frontend-*",
            src_namespace="shop", dest_namespace=ns, dest_service_name=f"svc{i % 2}",
            dest_service_namespace=ns, url="cart/x/{int}", method="GET",
            response_code="500" if i % 5 == 0 else "200", time=f"2026-01-01T00:00:{i:02d}Z",
            reason="error" if i % 5 == 0 else "sampled", sample_rate=1 if i % 5 == 0 else 10,
            request_id=f"rid-{i}", trace_id=f"{i:032x}", span_id=f"{i:016x}", duration_us=i * 1000,
            request_headers={"x-tenant": "it's \"quoted\" ✓"} if i == 7 else {},
            response_headers={"x-version": str(i)}))
    return out


def _dq(*match: tuple[str, str | int], namespaces: frozenset[str] | None = None,
        tr: TimeRange = ALL, limit: int = 100) -> detail_sql.DetailQuery:
    return detail_sql.DetailQuery(tr, namespaces, match, limit)


def test_details_are_stored_once_matched_scoped_and_retained(store: Store) -> None:
    ds = cast(detail_sql.DetailStore, store)
    recs = _details()
    assert ds.insert_details("node-a.d1", detail_sql.to_columns(recs), T0) is True
    assert ds.insert_details("node-a.d1", detail_sql.to_columns(recs), T0) is False  # a retry
    every = ds.details(_dq())
    assert len(every) == 30
    assert [r["end_time"] for r in every] == sorted((r["end_time"] for r in every), reverse=True)
    (r7,) = ds.details(_dq(("request_id", "rid-7")))
    assert r7 == {**msgspec.structs.asdict(recs[7])}  # whole, headers included
    (by_trace,) = ds.details(_dq(("trace_id", f"{12:032x}")))
    assert by_trace["request_id"] == "rid-12"
    drill = ds.details(_dq(("end_time", T0 + 1), ("host", "node-a"), ("dest_service_name", "svc0"),
                           ("dest_service_namespace", "shop"), ("response_code", "200")))
    want = {r.request_id for r in recs if r.end_time == T0 + 1 and r.dest_service_name == "svc0"
            and r.dest_service_namespace == "shop" and r.response_code == "200"}
    assert {r["request_id"] for r in drill} == want and want
    scoped = ds.details(_dq(namespaces=frozenset({"shop"})))
    assert {r["request_id"] for r in scoped} == {r.request_id for r in recs if r.dest_namespace == "shop"}
    assert ds.details(_dq(("request_id", "rid-1"), namespaces=frozenset({"shop"}))) == []  # payments
    assert len(ds.details(_dq(limit=5))) == 5
    assert ds.details(_dq(tr=TimeRange(T0 + 1, T0 + 2))) and all(
        r["end_time"] == T0 + 2 for r in ds.details(_dq(tr=TimeRange(T0 + 1, T0 + 2))))
    store.delete_before(T0 + 3)  # keeps end_time T0 + 3 (10 records)
    deadline = time.monotonic() + 20  # ClickHouse deletes by an asynchronous mutation
    while len(ds.details(_dq())) != 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {r["end_time"] for r in ds.details(_dq())} == {T0 + 3}
