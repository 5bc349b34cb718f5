"""Per-edge Prometheus series of the ingested records (issue 17 part 3), built with
`prometheus_client` (docs/metrics.md lists every name and label).

One series set per (source workload + namespace, destination workload + namespace, destination
Service + namespace, status class, route): requests, request and response bytes (counters) and a
request duration histogram. Records carry their latency histogram in l7scope's fine buckets
(`contracts.latency`); each fine bucket is counted into the first Prometheus bucket at or above its
midpoint, so a Prometheus bucket is exact up to one fine bucket's width (<= 1/16 of its value).
The histogram's `_sum` is `duration_mean * count`; records without a histogram (overflow
entries) add to the request counter only.

Pure counting (`count_raw`, then `labels_of`) runs on the ingest thread per batch, summed per
distinct raw key first; `EdgeSeries.add` folds a batch under a lock. At most `max_series` label sets are kept; the
rest go to one set whose labels are all `other` (counted, never dropped).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from l7scope.contracts import latency
from l7scope.contracts.record import TYPE_UNLOGGED

LABELS: Final = ("source_workload", "source_namespace", "destination_workload",
                 "destination_namespace", "destination_service", "destination_service_namespace",
                 "status_class", "route")
#: Upper bounds (seconds) of the request duration histogram.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0)
_BUCKETS_US: Final = tuple(int(b * 1_000_000) for b in BUCKETS)
MAX_SERIES: Final = 10_000
OTHER: Final = "other"

Labels = tuple[str, ...]


def status_class(code: str) -> str:
    """`2xx` .. `5xx`, or `no_response` (tcp, tls, no HTTP answer)."""
    return f"{code[0]}xx" if len(code) == 3 and code[0] in "12345" else "no_response"


def route_of(url: str) -> str:
    """The path part of a record's `url` (domain + route template); "" when it has none."""
    i = url.find("/")
    return url[i:] if i >= 0 else ""


def _prom_bucket(fine: int) -> int:
    lo, hi = latency.bucket_bounds(fine)
    mid = lo if hi - lo == 1 else (lo + hi) // 2
    return bisect.bisect_left(_BUCKETS_US, mid)  # len(BUCKETS) = +Inf


@dataclass(slots=True)
class Acc:
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration_sum_ns: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def add(self, o: Acc) -> None:
        self.requests += o.requests
        self.bytes_in += o.bytes_in
        self.bytes_out += o.bytes_out
        self.duration_sum_ns += o.duration_sum_ns
        for i, c in enumerate(o.buckets):
            self.buckets[i] += c


#: Prometheus bucket of each fine bucket index up to 1,023 (about 0.5 s), by its wire key.
_PROM_OF_KEY: Final = {str(i): _prom_bucket(i) for i in range(1024)}


#: A batch's distinct raw keys: type, source (name, namespace, type), destination (name,
#: namespace, type), Service (name, namespace), response code, url.
RawKey = tuple[str, str, str, str, str, str, str, str, str, str, str]


def count_raw(cols: Mapping[str, Sequence[Any]]) -> dict[RawKey, Acc]:
    """A batch's (server.columns.ColumnBatch) numbers per distinct raw key, in one pass: the
    per-record work is one dict update (and a table lookup per histogram bucket); status class,
    route and graph nodes are derived afterwards, once per key (`labels_of`,
    server.metrics.edge_counts). Unlogged records count requests only."""
    raw: dict[RawKey, Acc] = {}
    rows = zip(cols["type"], cols["src_name_aggr"], cols["src_namespace"], cols["src_type"],
               cols["dest_name_aggr"], cols["dest_namespace"], cols["dest_type"],
               cols["dest_service_name"], cols["dest_service_namespace"], cols["response_code"],
               cols["url"], cols["count"], cols["bytes_in"], cols["bytes_out"],
               cols["duration_mean"], cols["duration_hist"], strict=True)
    prom_of = _PROM_OF_KEY.get
    for typ, sw, sns, st, dw, dns, dt, svc, svcns, code, url, n, bi, bo, mean, hist in rows:
        key = (typ, sw, sns, st, dw, dns, dt, svc, svcns, code, url)
        acc = raw.get(key)
        if acc is None:
            acc = raw[key] = Acc()
        acc.requests += n
        acc.bytes_in += bi
        acc.bytes_out += bo
        if hist:
            acc.duration_sum_ns += mean * n
            buckets = acc.buckets
            for b, c in hist.items():
                i = prom_of(b)
                buckets[_prom_bucket(int(b)) if i is None else i] += c
    return raw


def labels_of(raw: Mapping[RawKey, Acc]) -> dict[Labels, Acc]:
    """The per-edge series of `count_raw`'s keys (unlogged records have none)."""
    out: dict[Labels, Acc] = {}
    for (typ, sw, sns, _st, dw, dns, _dt, svc, svcns, code, url), acc in raw.items():
        if typ == TYPE_UNLOGGED:
            continue
        label = (sw, sns, dw, dns, svc, svcns, status_class(code), route_of(url))
        mine = out.get(label)
        if mine is None:
            out[label] = mine = Acc()
        mine.add(acc)
    return out


def count_batch(cols: Mapping[str, Sequence[Any]]) -> dict[Labels, Acc]:
    """A batch's numbers per label set."""
    return labels_of(count_raw(cols))


class EdgeSeries(Collector):
    """The per-edge series since the server started; a `prometheus_client` collector."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self._lock = threading.Lock()
        self._series: dict[Labels, Acc] = {}
        self.max_series = max_series
        self.folded = 0  # label sets counted into the `other` set

    def add(self, batch: Mapping[Labels, Acc]) -> None:
        with self._lock:
            for key, acc in batch.items():
                mine = self._series.get(key)
                if mine is None:
                    if len(self._series) >= self.max_series:
                        key = (OTHER,) * len(LABELS)
                        self.folded += 1
                        mine = self._series.get(key)
                    if mine is None:
                        mine = self._series[key] = Acc()
                mine.add(acc)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            items = sorted((k, Acc(a.requests, a.bytes_in, a.bytes_out, a.duration_sum_ns,
                                   list(a.buckets))) for k, a in self._series.items())
        requests = CounterMetricFamily("l7scope_requests", "Requests per edge, status class and "
                                       "route template.", labels=LABELS)
        sent = CounterMetricFamily("l7scope_request_bytes", "Request bytes (client to "
                                   "destination) per edge.", labels=LABELS)
        received = CounterMetricFamily("l7scope_response_bytes", "Response bytes (destination to "
                                       "client) per edge.", labels=LABELS)
        duration = HistogramMetricFamily("l7scope_request_duration_seconds", "Request duration "
                                         "per edge (from the records' latency histograms).",
                                         labels=LABELS)
        for key, a in items:
            labels = list(key)
            requests.add_metric(labels, a.requests)
            sent.add_metric(labels, a.bytes_in)
            received.add_metric(labels, a.bytes_out)
            cum, buckets = 0, []
            for le, c in zip((*(str(b) for b in BUCKETS), "+Inf"), a.buckets, strict=True):
                cum += c
                buckets.append((le, cum))
            duration.add_metric(labels, buckets, a.duration_sum_ns / 1e9)
        folded = CounterMetricFamily("l7scope_edge_series_folded", "Label sets counted into the "
                                     "`other` series because of the series bound.")
        folded.add_metric([], self.folded)
        return [requests, sent, received, duration, folded]
