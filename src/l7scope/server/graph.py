"""The service graph: grouped store rows -> nodes, edges, per-class L7 stats, top routes.

Pure logic. `GRAPH_KEYS` / `ROUTE_KEYS` are the store groupings it needs; `build()` maps every
group to a source and destination node (namespace level, or services/workloads inside expanded
namespaces), sums the stats per edge and response class, merges latency histograms for the
percentiles, and gives every node and edge a selector that matches exactly its records.
Node-id rules are documented in docs/api.md.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from l7scope.contracts import latency
from l7scope.server.selector import quote
from l7scope.server.store.base import GroupRow

CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "no_response")
MAX_EDGES: Final = 20_000

#: Store grouping for edges: the endpoint fields, then the response class.
GRAPH_KEYS: Final = ["src_type", "src_namespace", "src_name_aggr", "dest_type", "dest_namespace",
                     "dest_name_aggr", "dest_service_namespace", "dest_service_name",
                     "response_class"]
#: Store grouping for top routes: the endpoint fields, then method and url.
ROUTE_KEYS: Final = [*GRAPH_KEYS[:-1], "method", "url"]
_NONE: Final = ("", "-")


@dataclass(frozen=True)
class NodeRef:
    id: str
    type: str
    name: str
    namespace: str | None
    selector: str  # this side of an edge, e.g. `src_namespace = "shop"`


def _ns_node(ns: str) -> str:
    return f"namespace/{ns}"


def source_node(src_type: str, ns: str, name: str, expanded: Collection[str]) -> NodeRef:
    if ns not in _NONE:
        if ns in expanded or "*" in expanded:
            return NodeRef(f"wep/{ns}/{name}", "wep", name, ns,
                           f"src_namespace = {quote(ns)} AND src_name_aggr = {quote(name)}")
        return NodeRef(_ns_node(ns), "namespace", ns, ns, f"src_namespace = {quote(ns)}")
    kind = "hep" if src_type == "hep" else "net"
    return NodeRef(f"{kind}/{name}", kind, name, None,
                   f"src_namespace IN {_none_set()} AND src_name_aggr = {quote(name)} AND "
                   f"src_type {'=' if kind == 'hep' else '!='} \"hep\"")


def _none_set() -> str:
    return '("", "-")'


def _has_service(svc_ns: str, svc: str) -> bool:
    return svc_ns != "" and svc != ""


_SVC_KNOWN: Final = 'dest_service_namespace != "" AND dest_service_name != ""'
_SVC_UNKNOWN: Final = '(dest_service_namespace = "" OR dest_service_name = "")'


def dest_node(dest_type: str, dest_ns: str, name: str, svc_ns: str, svc: str,
              expanded: Collection[str]) -> NodeRef:
    known = _has_service(svc_ns, svc)
    ns = svc_ns if known else dest_ns
    if ns not in _NONE:
        if ns in expanded or "*" in expanded:
            if known:
                return NodeRef(f"svc/{ns}/{svc}", "svc", svc, ns,
                               f"dest_service_namespace = {quote(ns)} AND dest_service_name = {quote(svc)}")
            return NodeRef(f"wep/{ns}/{name}", "wep", name, ns,
                           f"dest_namespace = {quote(ns)} AND dest_name_aggr = {quote(name)} AND {_SVC_UNKNOWN}")
        return NodeRef(_ns_node(ns), "namespace", ns, ns,
                       f"(dest_service_namespace = {quote(ns)} AND dest_service_name != \"\") OR "
                       f"(dest_namespace = {quote(ns)} AND {_SVC_UNKNOWN})")
    kind = "hep" if dest_type == "hep" else "net"
    return NodeRef(f"{kind}/{name}", kind, name, None,
                   f"{_SVC_UNKNOWN} AND dest_namespace IN {_none_set()} AND dest_name_aggr = {quote(name)} "
                   f"AND dest_type {'=' if kind == 'hep' else '!='} \"hep\"")


def namespace_selector(ns: str) -> str:
    return (f"src_namespace = {quote(ns)} OR dest_namespace = {quote(ns)} OR "
            f"dest_service_namespace = {quote(ns)}")


# --- stats --------------------------------------------------------------------------------


@dataclass
class Stats:
    count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    weighted: int = 0
    dmin: int | None = None
    dmax: int = 0
    errors: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, g: GroupRow) -> None:
        self.count += g.count
        self.bytes_in += g.bytes_in
        self.bytes_out += g.bytes_out
        self.weighted += g.duration_weighted_sum
        self.dmin = g.duration_min if self.dmin is None else min(self.dmin, g.duration_min)
        self.dmax = max(self.dmax, g.duration_max)
        self.errors += g.errors
        latency.merge_into(self.hist, g.hist)

    def quantile_ns(self, q: float) -> int | None:
        us = latency.quantile(self.hist, q) if self.hist else None
        return None if us is None else us * 1000

    def to_json(self, *, with_errors: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "mean_duration": self.weighted // self.count if self.count else 0,
            "min_duration": self.dmin or 0, "max_duration": self.dmax,
            "p50": self.quantile_ns(0.5), "p99": self.quantile_ns(0.99),
        }
        if with_errors:
            out["errors"] = self.errors
            out["error_rate"] = self.errors / self.count if self.count else 0.0
        return out


@dataclass
class _Edge:
    source: NodeRef
    target: NodeRef
    kind: str
    selector: str
    by_class: dict[str, Stats] = field(default_factory=dict)
    total: Stats = field(default_factory=Stats)
    routes: dict[tuple[str, str], Stats] = field(default_factory=dict)


def _endpoints(key: tuple[Any, ...], expanded: Collection[str]) -> tuple[NodeRef, NodeRef]:
    st, sns, sname, dt, dns, dname, svc_ns, svc = (str(k) for k in key[:8])
    return source_node(st, sns, sname, expanded), dest_node(dt, dns, dname, svc_ns, svc, expanded)


def build(edge_rows: Iterable[GroupRow], route_rows: Iterable[GroupRow], *,
          expanded: Collection[str], top_routes: int, unlogged: int) -> dict[str, Any]:
    edges: dict[str, _Edge] = {}
    nodes: dict[str, NodeRef] = {}

    def edge(src: NodeRef, dst: NodeRef, kind: str, selector: str) -> _Edge:
        eid = f"{src.id}->{dst.id}"
        e = edges.get(eid)
        if e is None:
            e = edges[eid] = _Edge(src, dst, kind, selector)
            nodes.setdefault(src.id, src)
            nodes.setdefault(dst.id, dst)
        return e

    for g in edge_rows:
        src, dst = _endpoints(g.key, expanded)
        cls = str(g.key[8])
        e = edge(src, dst, "traffic", f"({src.selector}) AND ({dst.selector})")
        e.by_class.setdefault(cls, Stats()).add(g)
        e.total.add(g)
        if dst.type == "svc":  # service -> the workloads that answered for it
            dname = str(g.key[5])
            wep = NodeRef(f"wep/{dst.namespace}/{dname}", "wep", dname, dst.namespace,
                          f"dest_namespace = {quote(str(g.key[4]))} AND dest_name_aggr = {quote(dname)}")
            b = edge(dst, wep, "backend", f"({dst.selector}) AND dest_name_aggr = {quote(dname)}")
            b.by_class.setdefault(cls, Stats()).add(g)
            b.total.add(g)
    if top_routes:
        for g in route_rows:
            src, dst = _endpoints(g.key, expanded)
            re_ = edges.get(f"{src.id}->{dst.id}")
            if re_ is not None:
                re_.routes.setdefault((str(g.key[8]), str(g.key[9])), Stats()).add(g)

    kept = list(edges.values())
    truncated = len(kept) > MAX_EDGES
    if truncated:
        kept = sorted(kept, key=lambda e: e.total.count, reverse=True)[:MAX_EDGES]

    node_stats: dict[str, Stats] = {}
    for e in kept:
        if e.kind == "traffic":
            for nid in {e.source.id, e.target.id}:
                s = node_stats.setdefault(nid, Stats())
                s.count += e.total.count
                s.errors += e.total.errors
                s.bytes_in += e.total.bytes_in
                s.bytes_out += e.total.bytes_out
    used = {e.source.id for e in kept} | {e.target.id for e in kept}
    out_nodes = [_node_json(nodes[nid], node_stats.get(nid, Stats()), expanded) for nid in sorted(used)]
    parents = sorted({n.namespace for n in nodes.values() if n.type in ("svc", "wep") and n.namespace})
    for ns in parents:  # compound parent of an expanded namespace's services and workloads
        out_nodes.append({
            "id": _ns_node(ns), "type": "namespace", "name": ns, "namespace": ns, "parent_id": None,
            "expandable": True, "expanded": True, "selector": namespace_selector(ns),
            "stats": {"count": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0},
        })
    logged = sum(e.total.count for e in edges.values() if e.kind == "traffic")
    seen = logged + unlogged
    return {
        "nodes": out_nodes,
        "edges": [_edge_json(e, top_routes) for e in kept],
        "completeness": {"requests_logged": logged, "requests_unlogged": unlogged,
                         "requests_seen": seen, "ratio": logged / seen if seen else 1.0},
        "truncated": truncated,
    }


def _node_json(n: NodeRef, s: Stats, expanded: Collection[str]) -> dict[str, Any]:
    if n.type == "namespace":
        selector = namespace_selector(n.name)
    elif n.type == "svc":
        selector = n.selector
    elif n.type == "wep" and n.namespace is not None:
        selector = (f"(src_namespace = {quote(n.namespace)} AND src_name_aggr = {quote(n.name)}) OR "
                    f"(dest_namespace = {quote(n.namespace)} AND dest_name_aggr = {quote(n.name)})")
    else:
        kind_op = "=" if n.type == "hep" else "!="
        selector = (f"(src_namespace IN {_none_set()} AND src_name_aggr = {quote(n.name)} AND src_type {kind_op} \"hep\") OR "
                    f"(dest_namespace IN {_none_set()} AND dest_name_aggr = {quote(n.name)} AND dest_type {kind_op} \"hep\")")
    return {
        "id": n.id, "type": n.type, "name": n.name, "namespace": n.namespace,
        "parent_id": _ns_node(n.namespace) if n.type in ("svc", "wep") and n.namespace else None,
        "expandable": n.type == "namespace", "expanded": False, "selector": selector,
        "stats": {"count": s.count, "errors": s.errors, "bytes_in": s.bytes_in, "bytes_out": s.bytes_out},
    }


def _edge_json(e: _Edge, top_routes: int) -> dict[str, Any]:
    routes = sorted(e.routes.items(), key=lambda kv: (-kv[1].count, kv[0]))[:top_routes]
    return {
        "id": f"{e.source.id}->{e.target.id}", "source": e.source.id, "target": e.target.id,
        "kind": e.kind, "selector": e.selector,
        "totals": e.total.to_json(with_errors=True),
        "stats": {c: (e.by_class[c].to_json() if c in e.by_class else None) for c in CLASSES},
        "top_routes": [
            {"method": m, "url": u, "count": s.count, "errors": s.errors,
             "error_rate": s.errors / s.count if s.count else 0.0, "p99": s.quantile_ns(0.99)}
            for (m, u), s in routes
        ],
    }
