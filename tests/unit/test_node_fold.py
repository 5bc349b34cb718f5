"""The node agent's hot path (`node/fold.py`) against the reference path (`ingest.updates` +
`Aggregator.add`): the same records, in the same order, and the same interval counters, on
varied Reports (merging entries, count-0 and overflow entries, hostile values, histograms
present, absent and invalid) under every setting that changes the key, the per-node limit
and the route budget; also across flushes, a settings change and a metadata change."""

from __future__ import annotations

import random
from typing import Any

import pytest

from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts.nodeconfig import AggregationSettings
from l7scope.contracts.record import L7Record
from l7scope.contracts.routes import RouteSettings
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator, FlushStats
from l7scope.node.enrich import Enricher
from l7scope.node.fold import Folder
from l7scope.node.metadata import MetadataCache
from l7scope.testing.node_inputs import pod, report, shop

SRCS = ["10.1.1.10", "10.1.1.11", "172.30.0.1", "203.0.113.5", "8.8.8.8", "10.9.9.9"]
DSTS = [("10.96.0.10", 80), ("10.1.2.20", 8080), ("10.96.0.20", 5432), ("10.1.2.30", 5432),
        ("1.2.3.4", 443), ("10.96.0.10", 70000)]
DOMAINS = ["cart", "cart.shop", "cart.shop.svc.cluster.local", "10.96.0.10:80", "db.data", "",
           "x" * 300]
PATHS = ["/", "/api/items/1?x=1", "/api/items/2", "/api/items/3/reviews", "/u/a/b/c/d/e/f/g",
         "/product/0f8fad5b-d9cb-469f-a165-70867728950e", "", "/" + "é" * 300]


def _entry(rng: random.Random) -> pb.HTTPData:
    kw: dict[str, Any] = dict(
        request_path=rng.choice(PATHS), request_method=rng.choice(["GET", "POST", "", "X" * 300]),
        response_code=rng.choice([200, 200, 404, 503, 0, -5]), domain=rng.choice(DOMAINS),
        count=rng.choice([1, 1, 2, 5, 0, -1]), type=rng.choice(["HTTP/1.1", "HTTP/2", "http", "tcp", ""]),
        user_agent=rng.choice(["curl/8", "", "U" * 5000]), upstream_host=rng.choice(
            ["", "10.1.2.20:8080", "10.1.2.21:8080", "cart:80"]),
        protocol=rng.choice(["", "HTTP/1.1", "HTTP/2"]), tls_sni=rng.choice(["", "shop.example"]),
        grpc_status=rng.choice(["", "0", "14"]), collector_type=rng.choice(["", "envoy-als"]),
        collector_name=rng.choice(["", "daemonset", "sidecar"]),
        latency=rng.choice([0, 3, -2]), bytes_sent=rng.choice([0, 100, -1]),
        bytes_received=rng.choice([0, 20]), bytes_sent_total=rng.choice([0, 0, 1 << 40]),
        bytes_received_total=rng.choice([0, 0, 1 << 33]))
    timing = rng.randrange(4)
    if timing == 0:  # Felix's milliseconds
        kw.update(duration=rng.choice([0, 4, -3]), duration_max=rng.choice([0, 3, -1]))
    elif timing == 1:  # l7scope's microseconds (one of them may be 0 or negative)
        kw.update(duration_us_sum=rng.choice([4100, 0, -7, 1 << 50]),
                  duration_us_max=rng.choice([3000, 1, -2]))
    elif timing == 2:
        kw.update(duration=2, duration_us_sum=900)
    if rng.random() < 0.5:
        hist = {rng.randrange(0, 200): rng.randint(1, 5) for _ in range(rng.randint(1, 4))}
        if rng.random() < 0.2:
            hist[-3] = 2  # invalid bucket
        if rng.random() < 0.2:
            hist[7] = rng.choice([0, -4])  # invalid counts
        kw["duration_hist"] = hist
    return pb.HTTPData(**kw)


def _reports(rng: random.Random, n: int) -> list[pb.DataplaneStats]:
    out = []
    for _ in range(n):
        entries = [_entry(rng) for _ in range(rng.choice([0, 1, 3, 6]))]
        dst, dport = rng.choice(DSTS)
        listed = sum(e.count for e in entries if e.count > 0)
        seen = rng.choice([listed, listed, listed + rng.randint(1, 9), max(listed - 1, 0), 0])
        ds = report(entries, src=rng.choice(SRCS), dst=dst, sport=rng.choice([40000, 40001, -1, 70000]),
                    dport=dport, seen=seen)
        if rng.random() < 0.05:
            ds.stats[0].relativity = pb.Statistic.ABSOLUTE  # does not count
        out.append(ds)
    return out


SETTINGS: list[dict[str, Any]] = [
    {},
    {"per_node_limit": 0},
    {"per_node_limit": 7},
    {"per_node_limit": 3, "routes": RouteSettings(max_routes_per_service=2)},
    {"routes": RouteSettings(enabled=False)},
    {"routes": RouteSettings(max_routes_per_service=1), "per_node_limit": 0},
    {"source_info": "IncludeL7SourceInfo", "http_header_info": "IncludeL7HTTPHeaderInfo"},
    {"source_info": "ExcludeL7SourceInfo", "destination_info": "ExcludeL7DestinationInfo",
     "service_info": "ExcludeL7ServiceInfo"},
    {"trim_url": "TrimURLQuery", "num_url_path": 1, "url_char_limit": 20},
    {"trim_url": "TrimURLQueryAndPath", "response_code": "ExcludeL7ResponseCode"},
    {"trim_url": "ExcludeL7URL", "http_method": "ExcludeL7HTTPMethod"},
]


def _both(settings: AggregationSettings, cache: MetadataCache) -> tuple[Aggregator, Aggregator, Folder, Enricher]:
    ref = Aggregator(settings, "n", 100.0)
    fast = Aggregator(settings, "n", 100.0)
    return ref, fast, Folder(fast, Enricher(cache), max_memo=40), Enricher(cache)


def _check(ref: Aggregator, fast: Aggregator, now: float) -> list[L7Record]:
    assert fast.pending() == ref.pending()
    want, got = ref.flush(now), fast.flush(now)
    assert got == want
    assert fast.last == ref.last
    return got


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(sorted(s)) or "defaults" for s in SETTINGS])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fold_equals_reference(settings: dict[str, Any], seed: int) -> None:
    cache = MetadataCache()
    cache.replace_all(shop())
    rng = random.Random(seed)
    ref, fast, folder, en = _both(AggregationSettings(**settings), cache)
    for interval in range(3):
        for ds in _reports(rng, 150):
            for u in ingest.updates(ds, en):
                ref.add(u)
            folder.add(ds)
        recs = _check(ref, fast, 110.0 + interval)
        assert sum(r.count for r in recs) == ref.last.requests_seen
    assert fast.totals == ref.totals and fast.totals != FlushStats()


def test_fold_equals_reference_across_settings_and_metadata_changes() -> None:
    cache = MetadataCache()
    cache.replace_all(shop())
    rng = random.Random(9)
    ref, fast, folder, en = _both(AggregationSettings(), cache)
    reports = _reports(rng, 400)
    for i, ds in enumerate(reports):
        if i == 100:  # a settings reload mid-interval
            ref.settings = fast.settings = AggregationSettings(source_info="IncludeL7SourceInfo",
                                                               per_node_limit=50)
        if i == 200:  # a new pod: the address that was `net` becomes a workload
            cache.upsert(pod("new-1", "shop", "10.9.9.9"))
        if i == 300:
            _check(ref, fast, 120.0)
        for u in ingest.updates(ds, en):
            ref.add(u)
        folder.add(ds)
    _check(ref, fast, 130.0)
    assert fast.totals == ref.totals
