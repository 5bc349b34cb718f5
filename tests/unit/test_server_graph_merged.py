"""The DuckDB store's one-statement service graph (graph_stats + build_merged) gives the same
answer as the reference path (group rows + build), for generated traffic and every expand mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from l7scope.contracts import latency
from l7scope.contracts.record import L7Record
from l7scope.contracts.timerange import TimeRange
from l7scope.server import graph
from l7scope.server.columns import to_columns
from l7scope.server.store import base
from l7scope.server.store.base import Filter
from l7scope.server.store.duckdb import DuckDBStore
from l7scope.testing import record_gen

T0 = 1_700_000_000


def _by_id(answer: dict) -> dict:  # type: ignore[type-arg]
    answer["edges"] = sorted(answer["edges"], key=lambda e: e["id"])
    return answer


@pytest.mark.parametrize("expanded", [set(), {"shop"}, {"shop", "payments", "-"}, {"*"}])
@pytest.mark.parametrize("top_routes", [0, 2, 5])
def test_merged_graph_equals_reference(tmp_path: Path, expanded: set[str], top_routes: int) -> None:
    store = DuckDBStore(tmp_path / "g.duckdb")
    try:
        recs = record_gen.records(record_gen.topology(namespaces=5, services_per_ns=3, edges=40, seed=3), 3000, T0, T0 + 600)
        store.insert(to_columns(recs))
        flt = Filter(TimeRange(T0, T0 + 600), None, exclude_unlogged=True)
        want = graph.build(store.group(flt, graph.graph_keys(expanded), True), expanded=expanded,
                           top_routes=top_routes, unlogged=7)
        got = graph.build_merged(store.graph_stats(flt, expanded, top_routes), expanded=expanded,
                                 top_routes=top_routes, unlogged=7)
        assert want["edges"], "the generated traffic must give edges"
        if "*" in expanded:
            assert any(e["kind"] == "backend" for e in want["edges"])
        assert _by_id(got) == _by_id(want)
    finally:
        store.close()


def _rec(src_ns: str, dst_ns: str, method: str, url: str, code: str, count: int,
         hist: dict[int, int], mean_us: int = 500) -> L7Record:
    return L7Record(
        start_time=T0 + 5, end_time=T0 + 10, duration_mean=mean_us * 1000, duration_max=mean_us * 3000,
        bytes_in=count * 10, bytes_out=count * 20, count=count, src_name_aggr="app-*",
        src_namespace=src_ns, src_type="wep", dest_name_aggr="svc-*", dest_namespace=dst_ns,
        dest_type="wep", dest_service_name="svc", dest_service_namespace=dst_ns, dest_port_num=80,
        url=url, response_code=code, method=method, type="HTTP/1.1",
        duration_hist=latency.to_wire(hist))


def _edge_shapes() -> list[L7Record]:
    """Edges with one class and one route, several classes and one route, several routes with
    tied counts (top-route order falls back to method, url), and records without histograms."""
    return [
        _rec("a", "one", "GET", "/x", "200", 3, {100: 3}),
        _rec("a", "one", "GET", "/x", "200", 2, {120: 2}),
        _rec("a", "classes", "GET", "/y", "200", 4, {90: 4}),
        _rec("a", "classes", "GET", "/y", "503", 1, {130: 1}),
        _rec("a", "classes", "GET", "/y", "", 1, {}),
        *(_rec("a", "routes", m, u, "200", 2, {80 + i: 2})
          for i, (m, u) in enumerate([("POST", "/b"), ("GET", "/b"), ("GET", "/a"), ("PUT", "/c")])),
        _rec("a", "routes", "GET", "/z", "404", 5, {110: 5}),
        _rec("a", "nohist", "GET", "/n", "200", 2, {}),
        _rec("b", "nohist", "GET", "/n", "200", 2, {}),
        _rec("b", "nohist", "GET", "/m", "500", 1, {}),
    ]


@pytest.mark.parametrize("expanded", [set(), {"*"}])
@pytest.mark.parametrize("top_routes", [0, 1, 2, 5])
def test_merged_graph_edge_shapes(tmp_path: Path, expanded: set[str], top_routes: int) -> None:
    store = DuckDBStore(tmp_path / "g.duckdb")
    try:
        store.insert(to_columns(_edge_shapes()))
        flt = Filter(TimeRange(T0, T0 + 600), None, exclude_unlogged=True)
        want = graph.build(store.group(flt, graph.graph_keys(expanded), True), expanded=expanded,
                           top_routes=top_routes, unlogged=0)
        rows = store.graph_stats(flt, expanded, top_routes)
        levels = {r[0] for r in rows}  # every row shape the store gives is exercised
        assert {base.MERGED_CLASS, base.MERGED_TOTAL} <= levels
        if top_routes:
            assert {base.MERGED_ROUTE, base.MERGED_TOTAL_ROUTE} <= levels
        got = graph.build_merged(rows, expanded=expanded, top_routes=top_routes, unlogged=0)
        edges = {e["id"]: e for e in want["edges"]}
        src = "wep/a/app-*" if expanded else "namespace/a"

        def edge_to(ns: str) -> dict:  # type: ignore[type-arg]
            return edges[f"{src}->svc/{ns}/svc" if expanded else f"{src}->namespace/{ns}"]

        one = edge_to("one")
        assert one["stats"]["2xx"]["count"] == 5 and one["totals"]["p50"] is not None
        if top_routes:
            routes = edge_to("routes")
            want_routes = [("GET", "/z"), ("GET", "/a"), ("GET", "/b"), ("POST", "/b"), ("PUT", "/c")]
            assert [(r["method"], r["url"]) for r in routes["top_routes"]] == want_routes[:top_routes]
        assert _by_id(got) == _by_id(want)
    finally:
        store.close()
