"""From one `DataplaneStats` (a collector's Report for one connection tuple) to enriched Updates.

As Felix (spec 7.1): only DELTA statistics count, and the HTTP_DATA statistic is the number of
requests seen on the tuple. An entry with `count` 0 gets the tuple's requests not covered by the
other entries; a Report with an HTTP_DATA count and no entries becomes one overflow entry with
type "". Beyond Felix, requests counted by the statistic but present in no entry are also turned
into an overflow entry, so every request the collector saw is accounted for.

Durations: the l7scope microsecond fields (`duration_us_sum/max`) are used when present, else
Felix's millisecond fields; a missing histogram is filled with the entry's mean (a Calico
collector sends none). Pure apart from cache lookups.
"""

from __future__ import annotations

from l7scope.contracts import latency
from l7scope.contracts import policysync_pb2 as pb
from l7scope.node import enrich
from l7scope.node.aggregate import Update
from l7scope.node.metadata import MetadataCache

_HTTP_DATA = pb.Statistic.HTTP_DATA
_DELTA = pb.Statistic.DELTA


def port(v: int) -> int:
    return v if 0 <= v <= 65535 else 0


def http_count(ds: pb.DataplaneStats) -> int:
    return int(sum(s.value for s in ds.stats if s.kind == _HTTP_DATA and s.relativity == _DELTA
                   and s.value > 0))


def requests_in(ds: pb.DataplaneStats) -> int:
    """How many requests this Report accounts for (what `updates()` will carry in total)."""
    detailed = int(sum(max(hd.count, 0) for hd in ds.http_data))
    return max(http_count(ds), detailed)


def updates(ds: pb.DataplaneStats, enricher: enrich.Enricher | MetadataCache) -> list[Update]:
    """The enriched updates of one Report (pass a long-lived Enricher on hot paths). The
    reference path: the node agent folds Reports with `node/fold.py`, which gives the same
    records."""
    en = enricher if isinstance(enricher, enrich.Enricher) else enrich.Enricher(enricher)
    src_port, dst_port = port(ds.src_port), port(ds.dst_port)
    dst_ip = ds.dst_ip
    src = en.endpoint(ds.src_ip)
    stat_count = http_count(ds)
    detailed = sum(hd.count for hd in ds.http_data if hd.count > 0)
    remaining = max(stat_count - detailed, 0)
    out: list[Update] = []
    for hd in ds.http_data:
        if hd.count <= 0:
            if remaining:
                out.append(overflow_update(ds, en, hd, remaining))
            remaining = 0
            continue
        upstream = hd.upstream_host
        dst = en.destination(dst_ip, upstream)
        svc = en.service(hd.domain, hd.type, upstream, dst_ip, dst_port, dst.namespace)
        out.append(_update(hd, hd.count, src, src_port, dst, dst_port, svc, overflow=False))
    if remaining:
        out.append(overflow_update(ds, en, None, remaining))
    return out


def overflow_update(ds: pb.DataplaneStats, en: enrich.Enricher, hd: pb.HTTPData | None,
                    count: int) -> Update:
    """The overflow update of a Report: `count` requests without details, carried by its first
    entry with count 0 (`hd`) or, without one, by an entry of its own (`hd` None)."""
    src_port, dst_port = port(ds.src_port), port(ds.dst_port)
    dst_ip = ds.dst_ip
    src = en.endpoint(ds.src_ip)
    if hd is None:
        dst = en.destination(dst_ip, "")
        svc = en.service("", "", "", dst_ip, dst_port, dst.namespace)
        return Update(src=src, src_port=src_port, dst=dst, dst_port=dst_port, service=svc,
                      count=count, overflow=True)
    upstream = hd.upstream_host
    dst = en.destination(dst_ip, upstream)
    svc = en.service(hd.domain, hd.type, upstream, dst_ip, dst_port, dst.namespace)
    return _update(hd, count, src, src_port, dst, dst_port, svc, overflow=True)


def protocol_of(protocol: str, log_type: str) -> str:
    """The record's protocol: the entry's, else its type when that is an HTTP version."""
    return protocol or (log_type if log_type.upper().startswith("HTTP/") else "")


DEFAULT_COLLECTOR_TYPE = "envoy-access-log"
DEFAULT_COLLECTOR_NAME = "daemonset"


def _update(hd: pb.HTTPData, count: int, src: enrich.Endpoint, src_port: int,
            dst: enrich.Endpoint, dst_port: int, svc: enrich.ServiceRef, overflow: bool) -> Update:
    if hd.duration_us_sum > 0 or hd.duration_us_max > 0:
        dur_sum, dur_max = hd.duration_us_sum * 1000, hd.duration_us_max * 1000
    else:
        dur_sum, dur_max = max(hd.duration, 0) * 1_000_000, max(hd.duration_max, 0) * 1_000_000
    if hd.duration_hist:
        hist = dict(hd.duration_hist)
        if min(hist) < 0 or min(hist.values()) <= 0:
            hist = {b: c for b, c in hist.items() if b >= 0 and c > 0}
    else:
        hist = {}
        if not overflow:
            latency.add(hist, dur_sum // 1000 // count, count)
    return Update(
        src=src, src_port=src_port, dst=dst, dst_port=dst_port, service=svc,
        domain=hd.domain, path=hd.request_path, method=hd.request_method,
        response_code=hd.response_code if hd.response_code > 0 else 0,
        user_agent=hd.user_agent, type=hd.type,
        protocol=protocol_of(hd.protocol, hd.type),
        tls_sni=hd.tls_sni, grpc_status=hd.grpc_status,
        collector_type=hd.collector_type or DEFAULT_COLLECTOR_TYPE,
        collector_name=hd.collector_name or DEFAULT_COLLECTOR_NAME,
        count=count,
        duration_sum_ns=max(dur_sum, 0), duration_max_ns=max(dur_max, 0),
        latency_sum_ns=max(hd.latency, 0) * 1_000_000,
        bytes_in=max(hd.bytes_received_total or hd.bytes_received, 0),
        bytes_out=max(hd.bytes_sent_total or hd.bytes_sent, 0),
        hist=hist, overflow=overflow,
    )
