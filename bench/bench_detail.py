"""Request detail overhead (docs/detail.md): collector and node agent with detail on vs off.

Collector: the same file of Envoy-shaped lines (`l7scope.testing.envoy_lines`, ~22 % 5xx, each
line with the `detail` object Envoy now logs: a W3C traceparent, null B3 keys and one allowlisted
header) through `Tail` -> `decode_block` -> `Batcher.add` (+ flush every 100k lines), on one
core, with `Batcher(picker=None)` (off) and with a `Picker` of the default settings (errors,
slow >= 1 s, 1 in 100 sampled, 500 per interval): rounds interleaved, best of each. The lines
past the cap are decided and counted, not built.

Node agent: `DetailKeeper.add` for Reports that each carry detail records (enrichment, the
Service's mode, the aggregated record's key) against the same Reports without them
(`ingest.updates` + `Aggregator.add` only).

Target: detail costs <= 10 % of the collector's rate.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from bench import bench_collector
from bench.row import Row
from l7scope.collector.batch import Batcher
from l7scope.collector.decode import decode_block
from l7scope.collector.detail import Picker
from l7scope.collector.tail import Tail
from l7scope.contracts import detail as dc
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator
from l7scope.node.detail import DetailKeeper
from l7scope.node.enrich import Enricher
from l7scope.node.metadata import MetadataCache
from l7scope.testing.node_inputs import http_data, report, shop

CHUNK = 1 << 16
LINES_PER_INTERVAL = 100_000


def write_file(path: Path, n: int) -> int:
    """The collector bench's lines, each with the `detail` object Envoy logs."""
    rng = random.Random(5)

    def with_detail(ln: bytes) -> bytes:
        return ln[:-1] + (b',"detail":{"traceparent":"00-%032x-%016x-01","b3_trace":null,'
                          b'"b3_span":null,"b3":null,"req:x-tenant":"acme"}}'
                          % (rng.getrandbits(128), rng.getrandbits(64)))
    return bench_collector.write_file(path, n, with_detail)


def collector(path: Path, detail: bool) -> tuple[float, int, int]:
    t0 = time.process_time()
    tail = Tail(path, start_at_end=False, max_lag_bytes=0, chunk_bytes=CHUNK)
    batcher = Batcher(picker=Picker(dc.DetailSettings()) if detail else None)
    n = since = details = 0
    while block := tail.read():
        decoded, _ = decode_block(block, tail.last_lines)
        batcher.add(decoded)
        n += len(decoded)
        since += len(decoded)
        if since >= LINES_PER_INTERVAL:
            details += batcher.flush().details
            since = 0
    details += batcher.flush().details
    tail.close()
    return time.process_time() - t0, n, details


def _reports(n: int, with_detail: bool) -> list[pb.DataplaneStats]:
    out = []
    for i in range(n):
        ds = report([http_data(path=f"/cart/{i % 50}", code=503, count=5, domain="cart",
                               duration_ms=10, duration_us_sum=10_000, duration_us_max=3000)])
        if with_detail:
            ds.request_details.extend(dc.encode_record(dc.DetailRecord(
                reason="error", method="GET", path=f"/cart/{i % 50}", domain="cart", response_code="503",
                type="HTTP/1.1", protocol="HTTP/1.1", request_id=f"r-{i}-{j}", duration_us=2000,
                trace_id=f"{i + 1:032x}", span_id=f"{j + 1:016x}", upstream_host="10.1.2.20:8080"))
                for j in range(2))
        out.append(ds)
    return out


def node(n: int, with_detail: bool) -> tuple[float, int]:
    cache = MetadataCache()
    cache.replace_all(shop())
    en = Enricher(cache)
    settings = NodeSettings.model_validate({"l7Detail": {"maxPerInterval": 100_000}})
    agg = Aggregator(settings.aggregation(), "node-a", 0.0)
    keeper = DetailKeeper(settings.l7_detail, "node-a", 0.0)
    reports = _reports(n, with_detail)
    t0 = time.process_time()
    for ds in reports:
        for u in ingest.updates(ds, en):
            agg.add(u)
        if with_detail:
            keeper.add(ds, en, agg)
    agg.flush(1.0)
    kept = len(keeper.flush(1.0))
    return time.process_time() - t0, kept


def run(quick: bool) -> list[Row]:
    n = 200_000 if quick else 1_000_000
    rounds = 3 if quick else 2
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(cpus)})
    try:
        with tempfile.TemporaryDirectory(prefix="l7scope-bench-") as d:
            path = Path(d) / "envoy.log"
            size = write_file(path, n)
            off, on = [], []
            details = 0
            for _ in range(rounds):
                t, got, _ = collector(path, False)
                assert got == n
                off.append(n / t)
                t, got, details = collector(path, True)
                assert got == n and details > 0
                on.append(n / t)
        m = 20_000 if quick else 50_000
        noff, non = [], []
        for _ in range(rounds):
            t, _ = node(m, False)
            noff.append(m / t)
            t, kept = node(m, True)
            assert kept == 2 * m
            non.append(m / t)
    finally:
        os.sched_setaffinity(0, cpus)
    r_off, r_on = max(off), max(on)
    over = 1 - r_on / r_off
    n_off, n_on = max(noff), max(non)
    return [
        Row(f"collector with request detail ({n // 1000}k lines, {size // n} B/line, {details} kept)",
            f"{r_on / 1000:.0f}k lines/s ({over:+.1%} cost)", f"detail off {r_off / 1000:.0f}k lines/s",
            "<= 10 % cost", over <= 0.10),
        Row(f"node agent Reports with 2 detail records each ({m // 1000}k Reports)",
            f"{n_on / 1000:.1f}k Reports/s ({1 - n_on / n_off:+.1%} cost)",
            f"no detail {n_off / 1000:.1f}k Reports/s"),
    ]
