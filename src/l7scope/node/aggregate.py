"""Aggregation of enriched updates into L7 records (spec 7.2, Felix settings table 8). Pure.

`Aggregator.add(update)` folds one enriched Report entry into the current flush interval;
`Aggregator.flush(now)` returns the interval's `L7Record`s and starts the next interval. The clock
is injected (`now` is epoch seconds); nothing here does I/O.

Key: every meta field after the `l7LogsFileAggregation*` settings blank excluded fields to `-`
(ports to 0). Merge: sums of durations, latency, bytes and count, max of duration_max, and the
latency histograms added bucket by bucket. URL: `IncludeL7FullURL` drops the query and keeps the
first `NumURLPath` path segments (negative keeps all); `TrimURLQuery` drops the query;
`TrimURLQueryAndPath` keeps only the domain; `ExcludeL7URL` drops both; then the path is turned
into its route template (`contracts/routes.py`, unless `l7RouteTemplates.enabled` is false; the
per-Service cardinality bound puts the rest into `/{other}`, counted in `requests_route_other`); then
domain + path is cut to `URLCharLimit` (the path first; a domain alone over the limit is cut and
the path dropped).

Per-node limit (`l7LogsFilePerNodeLimit`, 0 = none): at most `limit` detailed records per
interval; new keys beyond it are not stored. Overflow entries (requests the collector counted
without details) are kept in a separate store and emitted only while the total stays within the
limit. Every request that ends up in no record is counted, and one extra record
`{type: "unlogged", count: n}` carries that exact number. Unlike Felix (which counts updates and
loses overflow entries that do not fit) `count` here is requests, so the counts of one interval
always add up to `requests_seen`.

Units: Report durations arrive in milliseconds (Felix fields) or microseconds (l7scope extension
fields, preferred); records carry nanoseconds: `duration_mean = sum / count`, `duration_max`, and
`latency` = the sum (as Felix). p50/p90/p99 come from the merged histogram (contracts.latency).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from l7scope.contracts import latency
from l7scope.contracts.nodeconfig import AggregationSettings
from l7scope.contracts.record import TYPE_UNLOGGED, L7Record
from l7scope.contracts.routes import OTHER_ROUTE, Templater
from l7scope.node.enrich import NOT_INCLUDED, Endpoint, ServiceRef

log = logging.getLogger(__name__)

_SHORT, _LONG = 256, 4096  # contracts.record string limits


@dataclass(slots=True)
class Update:
    """One enriched Report entry: the meta fields before aggregation settings, and its numbers."""

    src: Endpoint
    src_port: int
    dst: Endpoint
    dst_port: int
    service: ServiceRef
    domain: str = ""
    path: str = ""
    method: str = ""
    response_code: int = 0
    user_agent: str = ""
    type: str = ""
    protocol: str = ""
    tls_sni: str = ""
    grpc_status: str = ""
    collector_type: str = "envoy-access-log"
    collector_name: str = "daemonset"
    count: int = 1
    duration_sum_ns: int = 0
    duration_max_ns: int = 0
    latency_sum_ns: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    overflow: bool = False  # no request details: counted by the collector beyond its cap


@dataclass(slots=True)
class _Acc:
    count: int = 0
    duration_sum_ns: int = 0
    duration_max_ns: int = 0
    latency_sum_ns: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def merge(self, u: Update) -> None:
        self.count += u.count
        self.duration_sum_ns += u.duration_sum_ns
        if u.duration_max_ns > self.duration_max_ns:
            self.duration_max_ns = u.duration_max_ns
        self.latency_sum_ns += u.latency_sum_ns
        self.bytes_in += u.bytes_in
        self.bytes_out += u.bytes_out
        latency.merge_into(self.hist, u.hist)


def trim_path(path: str, mode: str, num_url_path: int) -> str:
    """The path part of the URL after the TrimURL setting (`-` when excluded)."""
    if mode in ("TrimURLQueryAndPath", "ExcludeL7URL"):
        return NOT_INCLUDED
    path = path.split("?", 1)[0]
    if mode == "IncludeL7FullURL" and num_url_path >= 0:
        parts = path.split("/")
        if len(parts) > num_url_path + 1:
            path = "/".join(parts[: num_url_path + 1]) or "/"
    return path


def limit_url(domain: str, path: str, limit: int) -> tuple[str, str]:
    """Cut domain + path to `limit` characters: the path first, then the domain alone."""
    if len(domain) + len(path) <= limit:
        return domain, path
    if len(domain) > limit:
        return domain[:limit], NOT_INCLUDED
    return domain, path[: limit - len(domain)]


def url_of(domain: str, path: str) -> str:
    if domain == NOT_INCLUDED:
        return ""
    if path == NOT_INCLUDED:
        return domain
    return domain + path


def percentiles(hist: dict[int, int]) -> tuple[int, int, int]:
    """p50, p90, p99 in microseconds (0 when empty) in one pass; same answers as
    `latency.quantile` (bucket midpoints)."""
    total = sum(hist.values())
    if total <= 0:
        return 0, 0, 0
    out: list[int] = []
    targets = [0.5 * total, 0.9 * total, 0.99 * total]
    seen = 0
    for b in sorted(hist):
        c = hist[b]
        if c <= 0:
            continue
        seen += c
        while targets and seen >= targets[0]:
            targets.pop(0)
            lo, hi = latency.bucket_bounds(b)
            out.append(lo if hi - lo == 1 else (lo + hi) // 2)
    while len(out) < 3:
        lo, hi = latency.bucket_bounds(max(hist))
        out.append(lo if hi - lo == 1 else (lo + hi) // 2)
    return out[0], out[1], out[2]


# Positions in the key tuple (also the record's field order for the meta part).
_KEY_FIELDS = (
    "src_name_aggr", "src_namespace", "src_type", "source_port_num",
    "dest_name_aggr", "dest_namespace", "dest_type", "dest_port_num",
    "dest_service_name", "dest_service_namespace", "dest_service_port_name", "dest_service_port",
    "url", "response_code", "method", "user_agent", "type",
    "protocol", "tls_sni", "grpc_status", "collector_type", "collector_name",
)

Key = tuple[str | int, ...]


def key_of(u: Update, s: AggregationSettings, path: str | None = None) -> Key:
    """The aggregation key of an update under settings `s` (a tuple in _KEY_FIELDS order);
    `path`: the trimmed (and templated) path to use instead of trimming `u.path`."""
    x = NOT_INCLUDED
    if s.source_info == "ExcludeL7SourceInfo":
        src: tuple[str | int, ...] = (x, x, x, 0)
    else:
        port = u.src_port if s.source_info == "IncludeL7SourceInfo" else 0
        src = (u.src.name_aggr, u.src.namespace, u.src.type, port)
    if s.destination_info == "ExcludeL7DestinationInfo":
        dst: tuple[str | int, ...] = (x, x, x, 0)
    else:
        dst = (u.dst.name_aggr, u.dst.namespace, u.dst.type, u.dst_port)
    sv = u.service
    if s.service_info == "ExcludeL7ServiceInfo":
        svc: tuple[str | int, ...] = (x, x, x, 0)
    else:
        svc = (sv.name, sv.namespace, sv.port_name, sv.port)
    if s.trim_url == "ExcludeL7URL":
        url = ""
    else:
        if path is None:
            path = trim_path(u.path, s.trim_url, s.num_url_path)
        domain, path = limit_url(u.domain, path, s.url_char_limit)
        url = url_of(domain, path)[:_LONG]
    if s.response_code == "ExcludeL7ResponseCode":
        code, grpc = x, x if u.grpc_status else ""
    else:
        code, grpc = (str(u.response_code) if u.response_code else ""), u.grpc_status[:_SHORT]
    method = x if s.http_method == "ExcludeL7HTTPMethod" else u.method[:_SHORT]
    if s.http_header_info == "ExcludeL7HTTPHeaderInfo":
        ua, typ = x, x
    else:
        ua, typ = u.user_agent[:_LONG], u.type[:_SHORT]
    sni = "" if s.trim_url == "ExcludeL7URL" else u.tls_sni[:_SHORT]
    return (*src, *dst, *svc, url, code, method, ua, typ, u.protocol[:_SHORT], sni, grpc,
            u.collector_type[:_SHORT], u.collector_name[:_SHORT])


@dataclass
class FlushStats:
    requests_seen: int = 0
    requests_logged: int = 0
    requests_overflow: int = 0
    requests_unlogged: int = 0
    records: int = 0
    requests_route_other: int = 0  # requests whose route became OTHER_ROUTE (cardinality bound)


class Aggregator:
    """Folds updates of one flush interval; `flush(now)` emits records and resets."""

    def __init__(self, settings: AggregationSettings, node_name: str, start: float) -> None:
        self.node_name = node_name
        self._start = start
        self._store: dict[Key, _Acc] = {}
        self._overflow: dict[Key, _Acc] = {}
        self._seen = 0
        self._unlogged = 0
        self._routes: dict[tuple[str, str], set[str]] = {}  # Service -> its templates this interval
        self._route_other = 0
        self.settings = settings
        self.last = FlushStats()
        self.totals = FlushStats()

    @property
    def settings(self) -> AggregationSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: AggregationSettings) -> None:
        """New settings (a reload) take effect for the next update; a new template cache."""
        self._settings = settings
        routes = settings.routes
        self._templater = Templater(routes) if routes.enabled and settings.trim_url in (
            "IncludeL7FullURL", "TrimURLQuery") else None
        self._max_routes = routes.max_routes_per_service

    def add(self, u: Update) -> None:
        if u.count <= 0:
            return
        self._seen += u.count
        key = self._key(u, True)
        store = self._overflow if u.overflow else self._store
        acc = store.get(key)
        if acc is None:
            limit = self.settings.per_node_limit
            if limit and len(store) >= limit:
                self._unlogged += u.count
                return
            acc = store[key] = _Acc()
        acc.merge(u)

    def _key(self, u: Update, count: bool) -> Key:
        """The key of `u` with its route template; `count`: the update is being added (its
        route joins the Service's known ones or counts as OTHER_ROUTE)."""
        t = self._templater
        if t is None or u.overflow or not u.path:
            return key_of(u, self._settings)
        s = self._settings
        route = t.template(trim_path(u.path, s.trim_url, s.num_url_path))
        svc = (u.service.name, u.service.namespace)
        known = self._routes.get(svc)
        if known is None:
            known = self._routes[svc] = set()
        if route not in known:
            if len(known) >= self._max_routes:
                route = OTHER_ROUTE
                if count:
                    self._route_other += u.count
            elif count:
                known.add(route)
        return key_of(u, s, route)

    def key_fields(self, u: Update) -> dict[str, object]:
        """The record fields of the key `u` was (or would be) counted under, by field name."""
        return dict(zip(_KEY_FIELDS, self._key(u, False), strict=True))

    def pending(self) -> int:
        """Requests folded into the current interval so far."""
        return self._seen

    def flush(self, now: float) -> list[L7Record]:
        start, end = int(self._start), int(now)
        self._start = now
        limit = self.settings.per_node_limit
        detailed = list(self._store.items())
        overflow: list[tuple[Key, _Acc]] = []
        unlogged = self._unlogged
        for item in self._overflow.items():
            if limit and len(detailed) + len(overflow) >= limit:
                unlogged += item[1].count
            else:
                overflow.append(item)
        seen = self._seen
        logged = sum(a.count for _, a in detailed)
        self._store, self._overflow, self._seen, self._unlogged = {}, {}, 0, 0
        route_other, self._route_other, self._routes = self._route_other, 0, {}

        common = {"start_time": start, "end_time": end, "host": self.node_name,
                  "requests_seen": seen, "requests_logged": logged}
        records = [self._record(k, a, common) for k, a in detailed + overflow]
        if unlogged:
            log.warning("%d L7 requests were not logged, because of perNodeLimit being set to %d",
                        unlogged, limit)
            records.append(L7Record(count=unlogged, type=TYPE_UNLOGGED, **common))  # type: ignore[arg-type]
        st = FlushStats(seen, logged, seen - logged - unlogged, unlogged, len(records), route_other)
        self.last = st
        t = self.totals
        t.requests_seen += st.requests_seen
        t.requests_logged += st.requests_logged
        t.requests_overflow += st.requests_overflow
        t.requests_unlogged += st.requests_unlogged
        t.records += st.records
        t.requests_route_other += st.requests_route_other
        return records

    @staticmethod
    def _record(key: Key, a: _Acc, common: dict[str, object]) -> L7Record:
        meta = dict(zip(_KEY_FIELDS, key, strict=True))
        p50, p90, p99 = percentiles(a.hist)
        return L7Record(
            duration_mean=a.duration_sum_ns // a.count if a.count else 0,
            duration_max=a.duration_max_ns,
            latency=a.latency_sum_ns,
            bytes_in=a.bytes_in,
            bytes_out=a.bytes_out,
            count=a.count,
            duration_p50=p50 * 1000,
            duration_p90=p90 * 1000,
            duration_p99=p99 * 1000,
            duration_hist=latency.to_wire(a.hist),
            **meta,  # type: ignore[arg-type]
            **common,  # type: ignore[arg-type]
        )
