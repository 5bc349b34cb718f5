"""Records for the browser tests: a small shop with known edges and counts, a hostile record, and
a large namespace graph of exactly N nodes and M edges. Deterministic for a given `now`."""

from __future__ import annotations

import random

from l7scope.contracts import latency
from l7scope.contracts.record import TYPE_UNLOGGED, L7Record

#: URL and user agent of the hostile record: HTML and script that must show up as text.
HOSTILE_URL = 'cartservice:7070/x"><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
HOSTILE_UA = "<script>window.__pwned=3</script><b>bold</b> Mozilla/5.0"
HOSTILE_METHOD = "PATCH"  # no other record uses it, so `method = "PATCH"` finds this one

#: (src namespace, src workload, dest namespace, dest service, dest workload, port, routes, records)
SHOP_EDGES = [
    ("shop", "frontend-6b7c-*", "shop", "cartservice", "cartservice-7d9f-*", 7070,
     [("GET", "cartservice:7070/cart"), ("POST", "cartservice:7070/cart/add")], 130),
    ("shop", "frontend-6b7c-*", "shop", "checkout", "checkout-55aa-*", 5050,
     [("POST", "checkout:5050/checkout")], 40),
    ("shop", "checkout-55aa-*", "payments", "payment", "payment-9c1d-*", 50051,
     [("POST", "payment.payments:50051/charge")], 30),
    ("shop", "frontend-6b7c-*", "catalog", "productcatalog", "productcatalog-1f2e-*", 3550,
     [("GET", "productcatalog.catalog:3550/products"), ("GET", "productcatalog.catalog:3550/product/42")], 60),
    ("catalog", "productcatalog-1f2e-*", "payments", "currency", "currency-3a4b-*", 7000,
     [("GET", "currency.payments:7000/convert")], 20),
]


def _record(rnd: random.Random, end: int, src: tuple[str, str], dst: tuple[str, str, str, int],
            method: str, url: str, code: str, count: int, ua: str = "-") -> L7Record:
    hist: dict[int, int] = {}
    total_us = 0
    mx = 0
    for _ in range(count):
        us = int(rnd.lognormvariate(7.5, 0.7)) + 50
        latency.add(hist, us)
        total_us += us
        mx = max(mx, us)
    dns, dsvc, dwep, port = dst
    q = lambda p: (latency.quantile(hist, p) or 0) * 1000  # noqa: E731
    return L7Record(
        start_time=end - 5, end_time=end, duration_mean=total_us * 1000 // count, duration_max=mx * 1000,
        latency=count * 150_000, bytes_in=count * rnd.randint(100, 800), bytes_out=count * rnd.randint(200, 9000),
        count=count, src_name_aggr=src[1], src_namespace=src[0], src_type="wep",
        dest_name_aggr=dwep, dest_namespace=dns, dest_type="wep", dest_port_num=port,
        dest_service_name=dsvc, dest_service_namespace=dns, dest_service_port_name="http",
        dest_service_port=port, url=url, response_code=code, method=method, user_agent=ua,
        type="HTTP/1.1", host=f"node-{rnd.randrange(2)}", protocol="HTTP/1.1",
        duration_p50=q(0.5), duration_p90=q(0.9), duration_p99=q(0.99),
        duration_hist=latency.to_wire(hist), requests_seen=count, requests_logged=count,
    )


def shop_records(now: int, seed: int = 7) -> list[L7Record]:
    """SHOP_EDGES spread over the last 10 minutes, ~6 % errors, plus one hostile and one unlogged."""
    rnd = random.Random(seed)
    out: list[L7Record] = []
    for sns, swep, dns, dsvc, dwep, port, routes, n in SHOP_EDGES:
        for i in range(n):
            method, url = routes[i % len(routes)]
            code = rnd.choice(["500", "503"]) if rnd.random() < 0.06 else ("201" if method == "POST" else "200")
            out.append(_record(rnd, now - 5 - rnd.randrange(600), (sns, swep), (dns, dsvc, dwep, port),
                               method, url, code, rnd.randint(1, 40)))
    out.append(_record(rnd, now - 30, ("shop", "frontend-6b7c-*"), ("shop", "cartservice", "cartservice-7d9f-*", 7070),
                       HOSTILE_METHOD, HOSTILE_URL, "404", 3, ua=HOSTILE_UA))
    out.append(L7Record(start_time=now - 65, end_time=now - 60, count=25, type=TYPE_UNLOGGED, host="node-0",
                        requests_seen=25, requests_logged=0))
    return out


def big_graph_records(now: int, nodes: int = 200, edges: int = 1000, seed: int = 3) -> list[L7Record]:
    """Exactly `nodes` namespaces and `edges` distinct namespace-to-namespace edges, one record each."""
    per_node = edges // nodes
    assert per_node * nodes == edges and per_node < nodes
    rnd = random.Random(seed)
    names = [f"ns{i:03d}" for i in range(nodes)]
    out: list[L7Record] = []
    for i in range(nodes):
        for k in range(per_node):
            j = (i + 1 + k * 7) % nodes
            code = "500" if rnd.random() < 0.05 else "200"
            out.append(_record(rnd, now - 5 - rnd.randrange(600), (names[i], f"app{i}-abcd-*"),
                               (names[j], f"svc{j}", f"svc{j}-0f0f-*", 8080), "GET",
                               f"svc{j}.{names[j]}:8080/api/items", code, rnd.randint(1, 200)))
    return out
