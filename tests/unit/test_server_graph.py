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
