"""Realistic L7 records for tests and benchmarks: a topology of namespaces, services and
workloads with Zipf-like popularity, per-route methods and URLs, error codes and lognormal
durations with their latency histograms. Deterministic for a given seed."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from l7scope.contracts import latency
from l7scope.contracts.record import TYPE_UNLOGGED, L7Record

_PATHS = ("/cart", "/cart/add", "/checkout", "/product/{id}", "/api/v1/items", "/login",
          "/healthz", "/search", "/orders/{id}", "/hipstershop.CartService/GetCart")
_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Route:
    method: str
    url: str
    error_rate: float
    median_us: float


@dataclass(frozen=True)
class Edge:
    src_type: str
    src_namespace: str
    src_name_aggr: str
    dest_namespace: str
    dest_service: str
    dest_name_aggr: str
    port: int
    weight: float
    routes: tuple[Route, ...]


@dataclass
class Topology:
    namespaces: list[str]
    services: dict[str, list[str]]  # namespace -> services
    edges: list[Edge] = field(default_factory=list)


def topology(namespaces: int = 6, services_per_ns: int = 5, edges: int = 60, *,
             seed: int = 1, net_share: float = 0.05) -> Topology:
    """`edges` distinct (source workload -> destination service) pairs."""
    rnd = random.Random(seed)
    names = ["shop", "payments", "frontend", "catalog", "identity", "search", "ads", "mail",
             "shipping", "reviews", "billing", "storage"]
    nss = names[:namespaces] if namespaces <= len(names) else [f"ns{i}" for i in range(namespaces)]
    base = ["cartservice", "checkout", "currency", "product", "recommend", "email", "auth", "gateway"]
    svcs = {ns: [base[j] if j < len(base) else f"svc{j}" for j in range(services_per_ns)] for ns in nss}
    all_svcs = [(ns, s) for ns in nss for s in svcs[ns]]
    seen: set[tuple[str, str, str, str]] = set()
    out: list[Edge] = []
    attempts = 0
    while len(out) < edges and attempts < edges * 50:
        attempts += 1
        dns, dsvc = all_svcs[min(int(rnd.paretovariate(1.2)) - 1, len(all_svcs) - 1) if rnd.random() < 0.5
                             else rnd.randrange(len(all_svcs))]
        if rnd.random() < net_share:
            src_type, sns, sname = "net", "-", rnd.choice(["pub", "pvt"])
        else:
            sns, ssvc = all_svcs[rnd.randrange(len(all_svcs))]
            src_type, sname = "wep", f"{ssvc}-{rnd.randrange(16**4):04x}-*"
        key = (sns, sname, dns, dsvc)
        if key in seen:
            continue
        seen.add(key)
        port = rnd.choice([80, 8080, 7070, 9555])
        routes = tuple(
            Route(rnd.choice(_METHODS),
                  f"{dsvc}.{dns}:{port}" + rnd.choice(_PATHS).replace("{id}", str(rnd.randrange(100))),
                  min(0.5, rnd.lognormvariate(-4.5, 1.2)), rnd.lognormvariate(7.5, 0.8))
            for _ in range(rnd.randint(1, 4))
        )
        out.append(Edge(src_type, sns, sname, dns, dsvc, f"{dsvc}-{rnd.randrange(16**4):04x}-*",
                        port, 1.0 / (len(out) + 1) ** 0.8, routes))
    return Topology(nss, svcs, out)


def records(topo: Topology, n: int, start: int, end: int, *, seed: int = 2,
            unlogged_share: float = 0.0, host_count: int = 3) -> list[L7Record]:
    """`n` records with end_time in (start, end]; histograms consistent with the durations."""
    rnd = random.Random(seed)
    weights = [e.weight for e in topo.edges]
    picks = rnd.choices(topo.edges, weights=weights, k=n)
    out: list[L7Record] = []
    span = max(1, end - start)
    for e in picks:
        t_end = start + 1 + rnd.randrange(span)
        host = f"node-{rnd.randrange(host_count)}"
        if unlogged_share and rnd.random() < unlogged_share:
            c = rnd.randint(1, 50)
            out.append(L7Record(start_time=t_end - 5, end_time=t_end, count=c, type=TYPE_UNLOGGED,
                                host=host, requests_seen=c, requests_logged=0))
            continue
        route = rnd.choice(e.routes)
        count = max(1, int(rnd.expovariate(0.2)))
        hist: dict[int, int] = {}
        total = 0
        mx = 0
        for _ in range(min(count, 8)):
            us = max(1, int(rnd.lognormvariate(math.log(route.median_us), 0.6)))
            w = count // min(count, 8)
            latency.add(hist, us, w)
            total += us * w
            mx = max(mx, us)
        seen_n = sum(hist.values())
        if seen_n < count:
            latency.add(hist, mx, count - seen_n)
            total += mx * (count - seen_n)
        code = (rnd.choice(["500", "503", "404"]) if rnd.random() < route.error_rate
                else ("201" if route.method == "POST" else "200"))
        out.append(L7Record(
            start_time=t_end - 5, end_time=t_end,
            duration_mean=total * 1000 // count, duration_max=mx * 1000,
            latency=count * 200_000, bytes_in=count * rnd.randint(80, 900),
            bytes_out=count * rnd.randint(100, 20_000), count=count,
            src_name_aggr=e.src_name_aggr, src_namespace=e.src_namespace, src_type=e.src_type,
            dest_name_aggr=e.dest_name_aggr, dest_namespace=e.dest_namespace, dest_type="wep",
            dest_port_num=e.port, dest_service_name=e.dest_service,
            dest_service_namespace=e.dest_namespace, dest_service_port_name="http",
            dest_service_port=e.port, url=route.url, response_code=code, method=route.method,
            type="HTTP/1.1", host=host, protocol="HTTP/1.1",
            duration_p50=(latency.quantile(hist, 0.5) or 0) * 1000,
            duration_p90=(latency.quantile(hist, 0.9) or 0) * 1000,
            duration_p99=(latency.quantile(hist, 0.99) or 0) * 1000,
            duration_hist=latency.to_wire(hist), requests_seen=count, requests_logged=count,
        ))
    return out
