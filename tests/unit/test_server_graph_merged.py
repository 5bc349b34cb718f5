"""The DuckDB store's one-statement service graph (graph_stats + build_merged) gives the same
answer as the reference path (group rows + build), for generated traffic and every expand mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from l7scope.server import gen, graph
from l7scope.server.columns import to_columns
from l7scope.server.store.base import Filter
from l7scope.server.store.duckdb import DuckDBStore
from l7scope.server.timerange import TimeRange

T0 = 1_700_000_000


def _by_id(answer: dict) -> dict:  # type: ignore[type-arg]
    answer["edges"] = sorted(answer["edges"], key=lambda e: e["id"])
    return answer


@pytest.mark.parametrize("expanded", [set(), {"shop"}, {"shop", "payments", "-"}, {"*"}])
@pytest.mark.parametrize("top_routes", [0, 2, 5])
def test_merged_graph_equals_reference(tmp_path: Path, expanded: set[str], top_routes: int) -> None:
    store = DuckDBStore(tmp_path / "g.duckdb")
    try:
        recs = gen.records(gen.topology(namespaces=5, services_per_ns=3, edges=40, seed=3), 3000, T0, T0 + 600)
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
