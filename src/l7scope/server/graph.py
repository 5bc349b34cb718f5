"""The service graph: grouped store rows -> nodes, edges, per-class L7 stats, top routes.

`graph_keys()` is the one store grouping it needs: the source and destination node ids are
computed in SQL (`store.graph_ids`, the same rules as the Python reference `source_node` /
`dest_node`, checked against each other by the contract tests), then response
class, method and url. `build()` turns the groups into nodes and edges, sums the stats per edge
and response class, merges latency histograms for the percentiles, and gives every node and
edge a selector that matches exactly its records. Node-id rules: docs/api.md.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from l7scope.contracts import latency
from l7scope.contracts.selector import quote
from l7scope.server.store.base import (
    MERGED_CLASS,
    MERGED_TOTAL,
    MERGED_TOTAL_ROUTE,
    ExprKey,
    GroupKey,
    GroupRow,
    MergedRow,
)
from l7scope.server.store.graph_ids import backend_sql, dest_id_sql, source_id_sql

CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "no_response")
MAX_EDGES: Final = 50_000  # twice issue 18's largest graph (5k nodes / 25k edges); bounds the answer

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


def graph_keys(expanded: Collection[str]) -> list[GroupKey]:
    """The store grouping of the graph: src id, dst id, [backend], class, method, url."""
    exp = frozenset(expanded)
    keys: list[GroupKey] = [ExprKey("src_id", lambda p: source_id_sql(exp, p)),
                            ExprKey("dst_id", lambda p: dest_id_sql(exp, p))]
    if exp:
        keys.append(ExprKey("backend", lambda p: backend_sql(exp, p)))
    return [*keys, "response_class", "method", "url"]


def _none_sel(side: str, name: str, kind: str) -> str:
    return (f"{side}_namespace IN {_none_set()} AND {side}_name_aggr = {quote(name)} AND "
            f"{side}_type {'=' if kind == 'hep' else '!='} \"hep\"")


def node_from_id(node_id: str, side: str) -> NodeRef:
    """The node of an id built by graph_ids.source_id_sql (side "src") or dest_id_sql (side "dst")."""
    kind, _, rest = node_id.partition("/")
    if kind == "namespace":
        if side == "src":
            return NodeRef(node_id, kind, rest, rest, f"src_namespace = {quote(rest)}")
        return NodeRef(node_id, kind, rest, rest,
                       f"(dest_service_namespace = {quote(rest)} AND dest_service_name != \"\") OR "
                       f"(dest_namespace = {quote(rest)} AND {_SVC_UNKNOWN})")
    if kind in ("wep", "svc"):
        ns, _, name = rest.partition("/")
        if kind == "svc":
            return NodeRef(node_id, kind, name, ns,
                           f"dest_service_namespace = {quote(ns)} AND dest_service_name = {quote(name)}")
        if side == "src":
            return NodeRef(node_id, kind, name, ns,
                           f"src_namespace = {quote(ns)} AND src_name_aggr = {quote(name)}")
        return NodeRef(node_id, kind, name, ns,
                       f"dest_namespace = {quote(ns)} AND dest_name_aggr = {quote(name)} AND {_SVC_UNKNOWN}")
    if side == "src":
        return NodeRef(node_id, kind, rest, None, _none_sel("src", rest, kind))
    return NodeRef(node_id, kind, rest, None, f"{_SVC_UNKNOWN} AND {_none_sel('dest', rest, kind)}")


# --- stats --------------------------------------------------------------------------------


_MID: dict[int, int] = {}


def _mid_ns(bucket: int) -> int:
    """The reported value of a latency bucket, in ns (cached: few distinct buckets exist)."""
    v = _MID.get(bucket)
    if v is None:
        lo, hi = latency.bucket_bounds(bucket)
        v = _MID[bucket] = (lo if hi - lo == 1 else (lo + hi) // 2) * 1000
    return v


@dataclass(slots=True)
class Stats:
    count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    weighted: int = 0
    dmin: int | None = None
    dmax: int = 0
    errors: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    borrowed: bool = False  # hist is another object's dict: copy before changing it

    def _merge_hist(self, other: dict[int, int]) -> None:
        # Copy-on-write: the first histogram is borrowed (most groups have one row), and
        # copied only before another one is added into it. build() finishes adding to a
        # Stats before anything borrows from it (rows -> classes/routes, then classes -> total).
        if not other:
            return
        if not self.hist:
            self.hist = other
            self.borrowed = True
            return
        if self.borrowed:
            self.hist = dict(self.hist)
            self.borrowed = False
        latency.merge_into(self.hist, other)

    def add(self, g: GroupRow) -> None:
        self.count += g.count
        self.bytes_in += g.bytes_in
        self.bytes_out += g.bytes_out
        self.weighted += g.duration_weighted_sum
        if self.dmin is None or g.duration_min < self.dmin:
            self.dmin = g.duration_min
        if g.duration_max > self.dmax:
            self.dmax = g.duration_max
        self.errors += g.errors
        self._merge_hist(g.hist)

    def merge(self, other: Stats) -> None:
        self.count += other.count
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.weighted += other.weighted
        if other.dmin is not None:
            self.dmin = other.dmin if self.dmin is None else min(self.dmin, other.dmin)
        self.dmax = max(self.dmax, other.dmax)
        self.errors += other.errors
        self._merge_hist(other.hist)

    def p50_p99(self) -> tuple[int | None, int | None]:
        """Both percentiles (ns) in one pass over the sorted buckets; None without histogram.
        Same rule as contracts.latency.quantile (midpoint of the bucket holding the rank)."""
        h = self.hist
        total = sum(h.values())
        if total <= 0:
            return None, None
        r50, r99 = 0.5 * total, 0.99 * total
        seen = 0
        p50 = -1
        for b in sorted(h):
            c = h[b]
            if not c:
                continue
            seen += c
            if p50 < 0 and seen >= r50:
                p50 = b
            if seen >= r99:
                return _mid_ns(p50), _mid_ns(b)
        last = max(h)
        return _mid_ns(p50 if p50 >= 0 else last), _mid_ns(last)

    def to_json(self, *, with_errors: bool = False,
                percentiles: tuple[int | None, int | None] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "mean_duration": self.weighted // self.count if self.count else 0,
            "min_duration": self.dmin or 0, "max_duration": self.dmax,
        }
        out["p50"], out["p99"] = percentiles if percentiles is not None else self.p50_p99()
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
    routes: dict[tuple[str, str], list[GroupRow]] = field(default_factory=dict)


class _Edges:
    """Edges and nodes by id, created from the endpoint part of a graph key."""

    def __init__(self) -> None:
        self.edges: dict[str, _Edge] = {}
        self.nodes: dict[str, NodeRef] = {}
        self._src: dict[str, NodeRef] = {}
        self._dst: dict[str, NodeRef] = {}

    def edge(self, src: NodeRef, dst: NodeRef, kind: str, selector: str) -> _Edge:
        eid = f"{src.id}->{dst.id}"
        e = self.edges.get(eid)
        if e is None:
            e = self.edges[eid] = _Edge(src, dst, kind, selector)
            self.nodes.setdefault(src.id, src)
            self.nodes.setdefault(dst.id, dst)
        return e

    def src_node(self, node_id: str) -> NodeRef:
        n = self._src.get(node_id)
        if n is None:
            n = self._src[node_id] = node_from_id(node_id, "src")
        return n

    def dst_node(self, node_id: str) -> NodeRef:
        n = self._dst.get(node_id)
        if n is None:
            n = self._dst[node_id] = node_from_id(node_id, "dst")
        return n

    def traffic(self, src_id: str, dst_id: str) -> _Edge:
        return self.edge(*self.traffic_ends(src_id, dst_id))

    def backend(self, dst_id: str, backend: str) -> _Edge | None:
        ends = self.backend_ends(dst_id, backend)
        return None if ends is None else self.edge(*ends)

    def traffic_ends(self, src_id: str, dst_id: str) -> tuple[NodeRef, NodeRef, str, str]:
        """The two nodes (registered), kind and selector of a traffic edge."""
        src = self._src.get(src_id) or self.src_node(src_id)
        dst = self._dst.get(dst_id) or self.dst_node(dst_id)
        nodes = self.nodes
        if src_id not in nodes:
            nodes[src_id] = src
        if dst_id not in nodes:
            nodes[dst_id] = dst
        return src, dst, "traffic", f"({src.selector}) AND ({dst.selector})"

    def backend_ends(self, dst_id: str, backend: str) -> tuple[NodeRef, NodeRef, str, str] | None:
        """service -> the workloads that answered (`backend` is dest_namespace/dest_name_aggr)."""
        dst = self.dst_node(dst_id)
        if dst.type != "svc" or not backend:
            return None
        dns, _, dname = backend.partition("/")
        wep = NodeRef(f"wep/{dst.namespace}/{dname}", "wep", dname, dst.namespace,
                      f"dest_namespace = {quote(dns)} AND dest_name_aggr = {quote(dname)}")
        self.nodes.setdefault(dst.id, dst)
        self.nodes.setdefault(wep.id, wep)
        return dst, wep, "backend", f"({dst.selector}) AND dest_name_aggr = {quote(dname)}"


def build(rows: Iterable[GroupRow], *, expanded: Collection[str], top_routes: int,
          unlogged: int) -> dict[str, Any]:
    """`rows` grouped by graph_keys(expanded)."""
    eds = _Edges()
    endpoints: dict[tuple[Any, ...], tuple[_Edge, _Edge | None]] = {}

    def edges_of(key: tuple[Any, ...]) -> tuple[_Edge, _Edge | None]:
        e = eds.traffic(str(key[0]), str(key[1]))
        backend = eds.backend(str(key[1]), str(key[2])) if len(key) > 2 else None
        return e, backend

    nk = 3 if expanded else 2  # endpoint part of the key
    for g in rows:
        k = g.key[:nk]
        pair = endpoints.get(k)
        if pair is None:
            pair = endpoints[k] = edges_of(k)
        cls = str(g.key[nk])
        for e in pair:
            if e is None:
                continue
            st = e.by_class.get(cls)
            if st is None:
                st = e.by_class[cls] = Stats()
            st.add(g)
            if top_routes and e.kind == "traffic":
                route = (str(g.key[nk + 1]), str(g.key[nk + 2]))
                rs = e.routes.get(route)
                if rs is None:
                    e.routes[route] = [g]
                else:
                    rs.append(g)

    for e in eds.edges.values():
        for st in e.by_class.values():
            e.total.merge(st)
    kept = list(eds.edges.values())
    truncated = len(kept) > MAX_EDGES
    if truncated:
        kept = sorted(kept, key=lambda e: e.total.count, reverse=True)[:MAX_EDGES]
    logged = sum(e.total.count for e in eds.edges.values() if e.kind == "traffic")
    return _finish([_edge_json(e, top_routes) for e in kept], eds.nodes, logged=logged,
                   truncated=truncated, expanded=expanded, unlogged=unlogged)


class _Mids(dict[int | None, int | None]):
    """Bucket index -> reported value in ns (None -> None), filled on first use."""

    def __missing__(self, bucket: int | None) -> int | None:
        v = self[bucket] = None if bucket is None else _mid_ns(bucket)
        return v


_MIDS: Final = _Mids()


def build_merged(rows: Iterable[MergedRow], *, expanded: Collection[str], top_routes: int,
                 unlogged: int) -> dict[str, Any]:
    """The same answer as `build`, from rows the store already summed per edge and class, per
    edge and per route, with the percentile buckets (so the work here is per edge, not per
    record group). Row: level, edge key, a, b, kind, class, method, url, count, bytes_in,
    bytes_out, mean duration, min duration_mean, max duration_max, errors, p50 and p99 bucket
    (see MERGED_CLASS and the lines above it)."""
    mids = _MIDS
    classes: dict[Any, dict[str, dict[str, Any]]] = {}
    routes: dict[Any, list[dict[str, Any]]] = {}
    totals: list[MergedRow] = []
    for row in rows:
        level = row[0]
        if level in (MERGED_TOTAL, MERGED_TOTAL_ROUTE):
            totals.append(row)
        elif level == MERGED_CLASS:
            (_, key, _, _, _, cls, _, _, n, bi, bo, mean, dmin, dmax, _, b50, b99) = row
            one = {"count": n, "bytes_in": bi, "bytes_out": bo, "mean_duration": mean,
                   "min_duration": dmin or 0, "max_duration": dmax or 0,
                   "p50": mids[b50], "p99": mids[b99]}
            try:
                classes[key][cls] = one
            except KeyError:
                classes[key] = {cls: one}
        elif top_routes and row[4] == 0:  # the store gives an edge's routes busiest first
            (_, key, _, _, _, _, m, u, n, _, _, _, _, _, er, _, b99) = row
            route = {"method": m, "url": u, "count": n, "errors": er,
                     "error_rate": er / n if n else 0.0, "p99": mids[b99]}
            try:
                routes[key].append(route)
            except KeyError:
                routes[key] = [route]

    eds = _Edges()
    out: list[dict[str, Any]] = []
    no_class: dict[str, dict[str, Any]] = {}
    no_stats = dict.fromkeys(CLASSES)
    for (level, key, a, b, kind, cls, m, u, n, bi, bo, mean, dmin, dmax, er, b50, b99) in totals:
        ends = eds.traffic_ends(a, b) if kind == 0 else eds.backend_ends(a, b)
        if ends is None:
            continue
        src, dst, kind_name, sel = ends
        p50, p99 = mids[b50], mids[b99]
        stats = no_stats.copy()
        if cls is None:
            stats.update(classes.get(key, no_class))
        else:  # the edge's one class: its stats are the edge's
            stats[cls] = {"count": n, "bytes_in": bi, "bytes_out": bo, "mean_duration": mean,
                          "min_duration": dmin or 0, "max_duration": dmax or 0, "p50": p50, "p99": p99}
        top: list[dict[str, Any]] = []
        if top_routes and kind == 0:
            if level == MERGED_TOTAL_ROUTE:  # the edge's one route
                top = [{"method": m, "url": u, "count": n, "errors": er,
                        "error_rate": er / n if n else 0.0, "p99": p99}]
            else:
                top = routes.get(key, top)[:top_routes]
        out.append({
            "id": f"{src.id}->{dst.id}", "source": src.id, "target": dst.id,
            "kind": kind_name, "selector": sel,
            "totals": {"count": n, "bytes_in": bi, "bytes_out": bo, "mean_duration": mean,
                       "min_duration": dmin or 0, "max_duration": dmax or 0, "p50": p50, "p99": p99,
                       "errors": er, "error_rate": er / n if n else 0.0},
            "stats": stats, "top_routes": top,
        })
    truncated = len(out) > MAX_EDGES
    kept = sorted(out, key=lambda e: int(e["totals"]["count"]), reverse=True)[:MAX_EDGES] if truncated else out
    logged = sum(e["totals"]["count"] for e in out if e["kind"] == "traffic")
    return _finish(kept, eds.nodes, logged=logged, truncated=truncated, expanded=expanded,
                   unlogged=unlogged)


def _finish(kept: list[dict[str, Any]], nodes: dict[str, NodeRef], *, logged: int, truncated: bool,
            expanded: Collection[str], unlogged: int) -> dict[str, Any]:
    """The answer from the JSON of the kept edges and every node any edge named (`logged`:
    requests of all traffic edges, kept or not)."""

    node_stats: dict[str, list[int]] = {}
    used: set[str] = set()
    for e in kept:
        src, dst = e["source"], e["target"]
        used.add(src)
        used.add(dst)
        if e["kind"] == "traffic":
            t = e["totals"]
            for nid in ((src,) if src == dst else (src, dst)):
                s = node_stats.get(nid)
                if s is None:
                    node_stats[nid] = [t["count"], t["errors"], t["bytes_in"], t["bytes_out"]]
                else:
                    s[0] += t["count"]
                    s[1] += t["errors"]
                    s[2] += t["bytes_in"]
                    s[3] += t["bytes_out"]
    zero = [0, 0, 0, 0]
    out_nodes = [_node_json(nodes[nid], node_stats.get(nid, zero), expanded) for nid in sorted(used)]
    parents = sorted({n.namespace for n in nodes.values() if n.type in ("svc", "wep") and n.namespace})
    for ns in parents:  # compound parent of an expanded namespace's services and workloads
        out_nodes.append({
            "id": _ns_node(ns), "type": "namespace", "name": ns, "namespace": ns, "parent_id": None,
            "expandable": True, "expanded": True, "selector": namespace_selector(ns),
            "stats": {"count": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0},
        })
    seen = logged + unlogged
    return {
        "nodes": out_nodes,
        "edges": kept,
        "completeness": {"requests_logged": logged, "requests_unlogged": unlogged,
                         "requests_seen": seen, "ratio": logged / seen if seen else 1.0},
        "truncated": truncated,
    }


def _node_json(n: NodeRef, s: list[int], expanded: Collection[str]) -> dict[str, Any]:
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
        "stats": {"count": s[0], "errors": s[1], "bytes_in": s[2], "bytes_out": s[3]},
    }


def _top_routes(e: _Edge, n: int) -> list[dict[str, Any]]:
    """The n busiest routes; histograms are merged only for those."""
    counted = sorted(((sum(g.count for g in rows), key, rows) for key, rows in e.routes.items()),
                     key=lambda t: (-t[0], t[1]))[:n]
    out = []
    for count, (method, url), rows in counted:
        s = Stats()
        for g in rows:
            s.add(g)
        out.append({"method": method, "url": url, "count": count, "errors": s.errors,
                    "error_rate": s.errors / count if count else 0.0, "p99": s.p50_p99()[1]})
    return out


def _edge_json(e: _Edge, top_routes: int) -> dict[str, Any]:
    stats = {c: (e.by_class[c].to_json() if c in e.by_class else None) for c in CLASSES}
    if len(e.by_class) == 1:  # the total is that one class: reuse its percentiles
        only = next(v for v in stats.values() if v is not None)
        totals = e.total.to_json(with_errors=True, percentiles=(only["p50"], only["p99"]))
    else:
        totals = e.total.to_json(with_errors=True)
    return {
        "id": f"{e.source.id}->{e.target.id}", "source": e.source.id, "target": e.target.id,
        "kind": e.kind, "selector": e.selector, "totals": totals, "stats": stats,
        "top_routes": _top_routes(e, top_routes) if top_routes else [],
    }
