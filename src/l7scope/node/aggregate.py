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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from l7scope.contracts import latency
from l7scope.contracts.gcpause import gc_paused
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
    return key_from(u.src, u.src_port, u.dst, u.dst_port, u.service, u.domain,
                    trim_path(u.path, s.trim_url, s.num_url_path) if path is None else path,
                    u.method, u.response_code, u.user_agent, u.type, u.protocol, u.tls_sni,
                    u.grpc_status, u.collector_type, u.collector_name, s)


def key_from(src_ep: Endpoint, src_port: int, dst_ep: Endpoint, dst_port: int, sv: ServiceRef,
             domain: str, path: str, method: str, response_code: int, user_agent: str,
             log_type: str, protocol: str, tls_sni: str, grpc_status: str, collector_type: str,
             collector_name: str, s: AggregationSettings) -> Key:
    """`key_of` from the fields themselves; `path` already trimmed (and templated)."""
    return (*key_head(src_ep, src_port, dst_ep, dst_port, sv, s), key_url(domain, path, s),
            *key_tail(method, response_code, user_agent, log_type, protocol, tls_sni,
                      grpc_status, collector_type, collector_name, s))


def key_head(src_ep: Endpoint, src_port: int, dst_ep: Endpoint, dst_port: int, sv: ServiceRef,
             s: AggregationSettings) -> Key:
    """The key's first 12 fields: source, destination and Service (the connection's part)."""
    x = NOT_INCLUDED
    if s.source_info == "ExcludeL7SourceInfo":
        src: tuple[str | int, ...] = (x, x, x, 0)
    else:
        port = src_port if s.source_info == "IncludeL7SourceInfo" else 0
        src = (src_ep.name_aggr, src_ep.namespace, src_ep.type, port)
    if s.destination_info == "ExcludeL7DestinationInfo":
        dst: tuple[str | int, ...] = (x, x, x, 0)
    else:
        dst = (dst_ep.name_aggr, dst_ep.namespace, dst_ep.type, dst_port)
    if s.service_info == "ExcludeL7ServiceInfo":
        svc: tuple[str | int, ...] = (x, x, x, 0)
    else:
        svc = (sv.name, sv.namespace, sv.port_name, sv.port)
    return (*src, *dst, *svc)


def key_url(domain: str, path: str, s: AggregationSettings) -> str:
    """The key's url: domain + the trimmed (and templated) path, cut to URLCharLimit."""
    if s.trim_url == "ExcludeL7URL":
        return ""
    domain, path = limit_url(domain, path, s.url_char_limit)
    return url_of(domain, path)[:_LONG]


def key_tail(method: str, response_code: int, user_agent: str, log_type: str, protocol: str,
             tls_sni: str, grpc_status: str, collector_type: str, collector_name: str,
             s: AggregationSettings) -> Key:
    """The key's fields after the url."""
    x = NOT_INCLUDED
    if s.response_code == "ExcludeL7ResponseCode":
        code, grpc = x, x if grpc_status else ""
    else:
        code, grpc = (str(response_code) if response_code else ""), grpc_status[:_SHORT]
    method = x if s.http_method == "ExcludeL7HTTPMethod" else method[:_SHORT]
    if s.http_header_info == "ExcludeL7HTTPHeaderInfo":
        ua, typ = x, x
    else:
        ua, typ = user_agent[:_LONG], log_type[:_SHORT]
    sni = "" if s.trim_url == "ExcludeL7URL" else tls_sni[:_SHORT]
    return (code, method, ua, typ, protocol[:_SHORT], sni, grpc, collector_type[:_SHORT],
            collector_name[:_SHORT])


@dataclass
class FlushStats:
    requests_seen: int = 0
    requests_logged: int = 0
    requests_overflow: int = 0
    requests_unlogged: int = 0
    records: int = 0
    requests_route_other: int = 0  # requests whose route became OTHER_ROUTE (cardinality bound)


class Aggregator:
    """Folds updates of one flush interval; `flush(now)` emits records and resets.

    State per key, in columns: a key maps to a slot (`slot()`), and the slot indexes one list
    per number (`counts`, `dur_sums`, `dur_maxes`, `lat_sums`, `bytes_in`, `bytes_out`, Python
    ints: exact at any size) and one histogram dict per key (`hists`). `add(update)` is the
    reference path; `node/fold.py` writes the same columns straight from Reports."""

    def __init__(self, settings: AggregationSettings, node_name: str, start: float) -> None:
        self.node_name = node_name
        self._start = start
        self.generation = 0  # bumped by every flush and settings change (fold.py's memo)
        self._reset()
        self.settings = settings
        self.last = FlushStats()
        self.totals = FlushStats()

    def _reset(self) -> None:
        self._keys: dict[Key, int] = {}  # detailed keys -> slot
        self._okeys: dict[Key, int] = {}  # overflow keys -> slot
        self.counts: list[int] = []
        self.dur_sums: list[int] = []
        self.dur_maxes: list[int] = []
        self.lat_sums: list[int] = []
        self.bytes_in: list[int] = []
        self.bytes_out: list[int] = []
        self.hists: list[dict[int, int]] = []
        self.seen = 0  # requests folded this interval (fold.py adds to it directly)
        self.unlogged = 0
        self.route_other = 0
        self._routes: dict[tuple[str, str], set[str]] = {}  # Service -> its templates this interval
        self.generation += 1

    @property
    def settings(self) -> AggregationSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: AggregationSettings) -> None:
        """New settings (a reload) take effect for the next update; a new template cache."""
        self._settings = settings
        routes = settings.routes
        self.templater = Templater(routes) if routes.enabled and settings.trim_url in (
            "IncludeL7FullURL", "TrimURLQuery") else None
        self._max_routes = routes.max_routes_per_service
        self.generation += 1

    def route(self, path: str, service: ServiceRef) -> tuple[str, bool]:
        """The route template of a trimmed path (templater set), and whether it became
        OTHER_ROUTE because the Service already has `max_routes_per_service` routes; the caller
        counts the requests of an OTHER_ROUTE answer into `route_other`."""
        assert self.templater is not None
        route = self.templater.template(path)
        svc = (service.name, service.namespace)
        known = self._routes.get(svc)
        if known is None:
            known = self._routes[svc] = set()
        if route not in known:
            if len(known) >= self._max_routes:
                return OTHER_ROUTE, True
            known.add(route)
        return route, False

    def key(self, u: Update) -> tuple[Key, bool]:
        """The key of an update (templated path), and whether its route became OTHER_ROUTE."""
        t = self.templater
        if t is None or u.overflow or not u.path:
            return key_of(u, self._settings), False
        s = self._settings
        route, other = self.route(trim_path(u.path, s.trim_url, s.num_url_path), u.service)
        return key_of(u, s, route), other

    def slot(self, key: Key, overflow: bool) -> int:
        """The slot of a key in this interval (a new one with zeros if it is new), or -1 when it
        is new and the per-node limit is reached (its requests go to `unlogged`)."""
        keys = self._okeys if overflow else self._keys
        slot = keys.get(key)
        if slot is None:
            limit = self._settings.per_node_limit
            if limit and len(keys) >= limit:
                return -1
            slot = keys[key] = len(self.counts)
            self.counts.append(0)
            self.dur_sums.append(0)
            self.dur_maxes.append(0)
            self.lat_sums.append(0)
            self.bytes_in.append(0)
            self.bytes_out.append(0)
            self.hists.append({})
        return slot

    def add(self, u: Update) -> None:
        if u.count <= 0:
            return
        self.seen += u.count
        key, other = self.key(u)
        if other:
            self.route_other += u.count
        slot = self.slot(key, u.overflow)
        if slot < 0:
            self.unlogged += u.count
            return
        self.counts[slot] += u.count
        self.dur_sums[slot] += u.duration_sum_ns
        if u.duration_max_ns > self.dur_maxes[slot]:
            self.dur_maxes[slot] = u.duration_max_ns
        self.lat_sums[slot] += u.latency_sum_ns
        self.bytes_in[slot] += u.bytes_in
        self.bytes_out[slot] += u.bytes_out
        latency.merge_into(self.hists[slot], u.hist)

    def key_fields(self, u: Update) -> dict[str, object]:
        """The record fields of the key `u` was (or would be) counted under, by field name."""
        return dict(zip(_KEY_FIELDS, self.key(u)[0], strict=True))

    def pending(self) -> int:
        """Requests folded into the current interval so far."""
        return self.seen

    def flush(self, now: float) -> list[L7Record]:
        start, end = int(self._start), int(now)
        self._start = now
        limit = self.settings.per_node_limit
        detailed = list(self._keys.items())
        overflow: list[tuple[Key, int]] = []
        unlogged = self.unlogged
        counts = self.counts
        for item in self._okeys.items():
            if limit and len(detailed) + len(overflow) >= limit:
                unlogged += counts[item[1]]
            else:
                overflow.append(item)
        seen = self.seen
        logged = sum(counts[s] for _, s in detailed)
        route_other = self.route_other
        cols = (counts, self.dur_sums, self.dur_maxes, self.lat_sums, self.bytes_in,
                self.bytes_out, self.hists)
        self._reset()

        common = {"start_time": start, "end_time": end, "host": self.node_name,
                  "requests_seen": seen, "requests_logged": logged}
        with gc_paused():  # a record and a histogram dict per key, no cycles (contracts/gcpause.py)
            records = _records(detailed + overflow, cols, common)
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


def _mid(b: int) -> int:
    lo, hi = latency.bucket_bounds(b)
    return lo if hi - lo == 1 else (lo + hi) // 2


_Make = Callable[..., L7Record]


def _record_function() -> _Make:
    """`L7Record(src_name_aggr=key[0], ..., count=c, ...)` written out from _KEY_FIELDS (as
    server/columns.py does for its columns): literal keywords cost about half of building a
    dict per record with `dict(zip(...))` and passing `**` it."""
    for name in _KEY_FIELDS:
        if not name.isidentifier():
            raise AssertionError(f"field name {name!r} is not an identifier")
    meta = ", ".join(f"{name}=k[{i}]" for i, name in enumerate(_KEY_FIELDS))
    namespace: dict[str, object] = {"L7Record": L7Record}
    exec("def make(k, count, duration_mean, duration_max, latency, bytes_in, bytes_out, "
         "duration_p50, duration_p90, duration_p99, duration_hist, start_time, end_time, host, "
         "requests_seen, requests_logged):\n"
         f"    return L7Record({meta}, count=count, duration_mean=duration_mean, "
         "duration_max=duration_max, latency=latency, bytes_in=bytes_in, bytes_out=bytes_out, "
         "duration_p50=duration_p50, duration_p90=duration_p90, duration_p99=duration_p99, "
         "duration_hist=duration_hist, start_time=start_time, end_time=end_time, host=host, "
         "requests_seen=requests_seen, requests_logged=requests_logged)\n", namespace)
    fn: _Make = namespace["make"]  # type: ignore[assignment]
    return fn


_make: Final = _record_function()


def _records(items: list[tuple[Key, int]], cols: tuple[list[int], list[int], list[int], list[int],
             list[int], list[int], list[dict[int, int]]],
             common: dict[str, Any]) -> list[L7Record]:
    """The records of (key, slot) pairs; one-bucket histograms (most records) without sorting."""
    counts, dur_sums, dur_maxes, lat_sums, b_in, b_out, hists = cols
    start, end, host = common["start_time"], common["end_time"], common["host"]
    seen, logged = common["requests_seen"], common["requests_logged"]
    out: list[L7Record] = []
    append = out.append
    make = _make
    for key, s in items:
        c = counts[s]
        h = hists[s]
        if len(h) == 1:
            ((b, n),) = h.items()
            p50 = p90 = p99 = _mid(b) if n > 0 else 0
            wire = {str(b): n} if n else {}
        else:
            p50, p90, p99 = percentiles(h)
            wire = latency.to_wire(h)
        append(make(key, c, dur_sums[s] // c if c else 0, dur_maxes[s], lat_sums[s], b_in[s],
                    b_out[s], p50 * 1000, p90 * 1000, p99 * 1000, wire, start, end, host, seen,
                    logged))
    return out
