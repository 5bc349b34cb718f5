"""Service-graph helpers: the one-pass percentiles agree with contracts.latency.quantile."""

from __future__ import annotations

import random

from l7scope.contracts import latency
from l7scope.server.graph import Stats, dest_node, source_node


def test_p50_p99_match_latency_quantile() -> None:
    rnd = random.Random(1)
    for _ in range(3000):
        h = {rnd.randrange(300): rnd.randrange(0, 50) for _ in range(rnd.randrange(1, 12))}
        want = tuple(None if v is None else v * 1000 for v in (latency.quantile(h, 0.5), latency.quantile(h, 0.99)))
        assert Stats(hist=h).p50_p99() == want, h
    assert Stats().p50_p99() == (None, None)


def test_node_ids() -> None:
    assert source_node("wep", "shop", "cart-*", set()).id == "namespace/shop"
    assert source_node("wep", "shop", "cart-*", {"shop"}).id == "wep/shop/cart-*"
    assert source_node("net", "-", "pvt", {"*"}).id == "net/pvt"
    assert source_node("hep", "-", "node1", set()).id == "hep/node1"
    assert dest_node("wep", "shop", "cart-*", "shop", "cart", set()).id == "namespace/shop"
    assert dest_node("wep", "shop", "cart-*", "shop", "cart", {"shop"}).id == "svc/shop/cart"
    assert dest_node("wep", "shop", "cart-*", "", "", {"shop"}).id == "wep/shop/cart-*"
    assert dest_node("net", "-", "pub", "", "", set()).id == "net/pub"


def test_build_merges_histograms_without_touching_the_rows() -> None:
    from l7scope.server.graph import build
    from l7scope.server.store.base import GroupRow

    rnd = random.Random(2)
    rows = []
    for i in range(200):
        h = {rnd.randrange(40, 120): rnd.randrange(1, 9) for _ in range(rnd.randrange(1, 5))}
        cls = rnd.choice(["2xx", "5xx"])
        rows.append(GroupRow(key=(f"namespace/a{i % 3}", f"namespace/b{i % 2}", cls, "GET", f"/r{i % 4}"),
                             records=1, count=sum(h.values()), bytes_in=1, bytes_out=2,
                             duration_weighted_sum=10, duration_min=1, duration_max=9,
                             errors=sum(h.values()) if cls == "5xx" else 0, hist=h))
    before = [dict(r.hist) for r in rows]
    out = build(rows, expanded=set(), top_routes=10, unlogged=0)
    assert [r.hist for r in rows] == before
    for e in out["edges"]:
        mine = [r for r in rows if f"{r.key[0]}->{r.key[1]}" == e["id"]]
        merged = latency.merged(r.hist for r in mine)
        assert e["totals"]["p99"] == latency.quantile(merged, 0.99) * 1000  # type: ignore[operator]
        assert e["totals"]["count"] == sum(r.count for r in mine)
        for c in ("2xx", "5xx"):
            part = [r for r in mine if r.key[2] == c]
            if part:
                want = latency.quantile(latency.merged(r.hist for r in part), 0.5)
                assert e["stats"][c]["p50"] == want * 1000  # type: ignore[operator]
        for route in e["top_routes"]:
            rs = [r for r in mine if r.key[4] == route["url"]]
            assert route["p99"] == latency.quantile(latency.merged(r.hist for r in rs), 0.99) * 1000  # type: ignore[operator]
