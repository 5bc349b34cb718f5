"""Node agent: how fast Reports are enriched and aggregated, and its memory at 10k distinct keys.

1. In process, one core (CPU time of this process, so other load on the machine does not
   count): DataplaneStats (serialized, as they arrive) -> decode -> the agent's hot path
   `fold.Folder.add` (enrichment against a metadata cache of 2,000 pods / 200 Services, once per
   new key; aggregation in columns), then one flush into records. Every entry is its own key
   (2,000 paths x 200 sources x 200 Services, source port excluded): the worst case, where
   enrichment and record building are paid per entry. Baseline in the same run: protobuf
   decoding of the same messages alone; also the reference path (`ingest.updates` ->
   `Aggregator.add`, one Update per entry). The same messages again with route templates on
   (the default) vs off, alternating rounds. And the usual shape, keys repeating within the
   interval (20 client pods x 10 Services x 20 paths, templates on: 200 records), where the
   fold's memo answers most entries.
2. A real `l7scope node` process (no capture, no server): Reports carrying 10,000 distinct keys
   arrive over the Policy Sync socket within one flush interval; its RSS is read from /proc
   while all keys are held.
3. Collector + agent together (the design target is <= 150 MB for the pair): a real
   `l7scope collector` tails an Envoy log that receives 100,000 lines at once from 720 client
   connections: 10,000 distinct batching keys (connection x method x path x status), read
   and batched within one or two 1 s intervals (no per-interval cap), then reported to the agent
   of item 2, which still holds its 10,000 keys. Both RSS values are
   sampled together every 50 ms until the collector has reported every line; the row gives the
   highest sum.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml

from bench.row import Row
from l7scope.contracts import policysync
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts import policysync_pb2_grpc as pb_grpc
from l7scope.contracts.gcpause import gc_paused
from l7scope.contracts.nodeconfig import AggregationSettings
from l7scope.contracts.routes import RouteSettings
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator
from l7scope.node.enrich import Enricher
from l7scope.node.fold import Folder
from l7scope.node.metadata import MetadataCache


def _objects(pods: int, services: int) -> list[dict[str, object]]:
    objs: list[dict[str, object]] = []
    for s in range(services):
        objs.append({"kind": "Service", "metadata": {"name": f"svc{s}", "namespace": f"ns{s % 20}"},
                     "spec": {"clusterIP": f"10.96.{s // 250}.{s % 250 + 1}",
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    for p in range(pods):
        s = p % services
        objs.append({"kind": "Pod", "metadata": {"name": f"w{s}-abc-{p}", "namespace": f"ns{s % 20}",
                                                 "generateName": f"w{s}-abc-"},
                     "spec": {"nodeName": "n1"},
                     "status": {"podIP": f"10.244.{p // 250}.{p % 250 + 1}"}})
    for s in range(services):
        ips = [f"10.244.{p // 250}.{p % 250 + 1}" for p in range(s, pods, services)]
        objs.append({"kind": "EndpointSlice",
                     "metadata": {"name": f"svc{s}-x", "namespace": f"ns{s % 20}",
                                  "labels": {"kubernetes.io/service-name": f"svc{s}"}},
                     "endpoints": [{"addresses": [ip]} for ip in ips],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    return objs


def _reports(n: int, keys: int, rng: random.Random, pods: int = 2000,
             services: int = 200) -> list[bytes]:
    out = []
    for i in range(n):
        s = rng.randrange(services)
        entries = []
        for _ in range(3):
            k = rng.randrange(keys)
            hist = {40 + k % 30: 2}
            entries.append(pb.HTTPData(
                request_path=f"/api/v1/items/{k}", request_method="GET", response_code=200,
                domain=f"svc{s}.ns{s % 20}", count=2, duration=4, duration_max=3,
                duration_us_sum=4100, duration_us_max=3000, duration_hist=hist,
                type="HTTP/1.1", user_agent="bench/1", bytes_sent=200, bytes_received=20))
        p = rng.randrange(pods)
        ds = pb.DataplaneStats(
            src_ip=f"10.244.{p // 250}.{p % 250 + 1}", dst_ip=f"10.96.{s // 250}.{s % 250 + 1}",
            src_port=30000 + i % 30000, dst_port=80, protocol=pb.Protocol(name="tcp"),
            http_data=entries,
            stats=[pb.Statistic(relativity=pb.Statistic.DELTA, kind=pb.Statistic.HTTP_DATA,
                                value=6)])
        out.append(ds.SerializeToString())
    return out


def _throughput(quick: bool) -> list[Row]:
    rng = random.Random(1)
    cache = MetadataCache()
    cache.replace_all(_objects(2000, 200))
    msgs = _reports(5_000 if quick else 40_000, 2_000, rng)
    entries = 3 * len(msgs)

    t0 = time.process_time()
    for m in msgs:
        pb.DataplaneStats.FromString(m)
    decode_s = time.process_time() - t0

    # the usual shape: keys repeat within an interval (20 client pods x 10 Services x 20 paths)
    repeated = _reports(len(msgs), 20, random.Random(3), pods=20, services=10)

    def aggregate(routes: RouteSettings, reference: bool = False,
                  msgs: list[bytes] = msgs) -> tuple[float, int]:
        agg = Aggregator(AggregationSettings(per_node_limit=0, routes=routes), "n1", 0.0)
        en = Enricher(cache)
        folder = Folder(agg, en)
        t0 = time.process_time()
        if reference:
            for m in msgs:
                for u in ingest.updates(pb.DataplaneStats.FromString(m), en):
                    agg.add(u)
        else:
            for i in range(0, len(msgs), 1000):  # as the agent's flush loop: GC paused per 1,000
                with gc_paused():
                    for m in msgs[i:i + 1000]:
                        folder.add(pb.DataplaneStats.FromString(m))
        records = agg.flush(1.0)
        return time.process_time() - t0, len(records)

    # templates off vs on (the paths /api/v1/items/<n> collapse to /api/v1/items/{int}),
    # alternating rounds of the same messages; the best round of each
    off, on = RouteSettings(enabled=False), RouteSettings()
    runs: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    refs: list[tuple[float, int]] = []
    for _ in range(1 if quick else 2):
        runs[False].append(aggregate(off))
        runs[True].append(aggregate(on))
        refs.append(aggregate(off, reference=True))
    (total_s, n_off), (on_s, n_on), (ref_s, _) = min(runs[False]), min(runs[True]), min(refs)
    rep_s, n_rep = min(aggregate(on, msgs=repeated) for _ in range(1 if quick else 2))
    rep_ref_s, _ = min(aggregate(on, reference=True, msgs=repeated) for _ in range(1 if quick else 2))
    rate, base, rate_on, rate_ref = entries / total_s, entries / decode_s, entries / on_s, entries / ref_s
    return [Row("node agent: Report entries enriched + aggregated /s (1 core, CPU time; fold.py, "
                "every entry its own record)",
                f"{rate:,.0f} entries/s ({n_off:,} records; {rate / base:.2f}x decode)",
                f"protobuf decode alone {base:,.0f} entries/s; reference path (an Update per "
                f"entry) {rate_ref:,.0f}/s ({rate / rate_ref:.1f}x)",
                ">= 200,000 entries/s and >= 0.15x decode",
                (rate >= 200_000 and rate / base >= 0.15) if not quick else None),
            Row(f"node agent, keys repeating (20 pods x 10 Services x 20 paths, templates on): "
                f"{entries:,} entries",
                f"{entries / rep_s:,.0f} entries/s ({n_rep:,} records)",
                f"reference path {entries / rep_ref_s:,.0f}/s ({rep_ref_s / rep_s:.1f}x)",
                ">= 200,000 entries/s", entries / rep_s >= 200_000 if not quick else None),
            Row("node agent with route templates on vs off, same run (2,000 raw paths)",
                f"on {rate_on:,.0f} entries/s ({n_on:,} records)",
                f"off {rate:,.0f} entries/s ({rate_on / rate:.2f}x)", "-", None)]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _memory(quick: bool) -> list[Row]:
    keys = 2_000 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="bench-node-") as d:
        tmp = Path(d)
        settings = tmp / "node.yaml"
        settings.write_text(yaml.safe_dump({
            "policySyncPathPrefix": str(tmp / "ps"), "l7LogsFileDirectory": str(tmp / "logs"),
            "l7LogsFlushInterval": "10m", "l7LogsFilePerNodeLimit": 0,
            "l7LogsFileAggregationHTTPHeaderInfo": "IncludeL7HTTPHeaderInfo"}))
        inv = tmp / "inv"
        inv.mkdir()
        (inv / "objs.yaml").write_text(yaml.safe_dump_all(_objects(2000, 200)))
        proc = subprocess.Popen([sys.executable, "-m", "l7scope", "node", "--settings",
                                 str(settings), "--inventory", str(inv), "--node-name", "n1",
                                 "--data-dir", str(tmp / "data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sock = policysync.socket_path(tmp / "ps")
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            idle = _rss_mb(proc.pid)
            rng = random.Random(2)
            with grpc.insecure_channel(policysync.dial_target(sock)) as ch:
                stub = pb_grpc.PolicySyncStub(ch)
                for i, m in enumerate(_reports(keys // 3 * 2, keys, rng)):
                    ds = pb.DataplaneStats.FromString(m)
                    for j, e in enumerate(ds.http_data):
                        e.request_path = f"/api/v1/items/{(3 * i + j) % keys}"
                    stub.Report(ds, timeout=10)
            time.sleep(1.0)
            loaded = _rss_mb(proc.pid)
            pair = _with_collector(tmp, sock, proc.pid, 30_000 if quick else 100_000)
        finally:
            proc.terminate()
            proc.wait(30)
    peak, coll, agent, coll_idle, lines = pair
    return [Row(f"node agent RSS holding {keys:,} distinct keys (process idle: {idle:.0f} MB)",
                f"{loaded:.0f} MB", "-", "-", None),
            Row(f"collector + node agent RSS, peak sum (collector batching {lines:,} lines "
                f"with 10,000 distinct keys; agent holding {keys:,} keys)",
                f"{peak:.0f} MB", f"collector {coll:.0f} (idle {coll_idle:.0f}) + agent {agent:.0f} MB at the peak",
                "<= 150 MB", peak <= 150 if not quick else None)]


def _with_collector(tmp: Path, sock: Path, agent_pid: int,
                    n: int) -> tuple[float, float, float, float, int]:
    """Run a collector against the agent at `sock` while its log receives `n` lines; return the
    highest RSS sum and its two parts, the collector's idle RSS, and the lines it reported."""
    import httpx

    from l7scope.testing.envoy_lines import lines

    log = tmp / "envoy.log"  # created below: a file that appears later is read from its start
    port = _free_port()
    err = (tmp / "collector.err").open("wb")  # closed in `finally`
    coll = subprocess.Popen([sys.executable, "-m", "l7scope", "collector", "--envoy-log", str(log),
                             "--dial-target", f"unix://{sock}", "--interval", "1",
                             "--requests-per-interval", "-1", "--max-lag-bytes", "0", "--node-name", "n1",
                             "--no-checkpoint",
                             "--status-addr", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=err)
    best = (0.0, 0.0, 0.0)
    reported = 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    http.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            idle = _rss_mb(coll.pid)
            log.write_bytes(b"".join(ln + b"\n" for ln in lines(n, connections=720, paths=2)))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                c, a = _rss_mb(coll.pid), _rss_mb(agent_pid)
                if c + a > best[0]:
                    best = (c + a, c, a)
                reported = int(http.get("/stats").json()["requests_reported"])
                if reported >= n:
                    break
                time.sleep(0.05)
    finally:
        coll.terminate()
        coll.wait(30)
        err.close()
    if reported < n:
        raise RuntimeError(f"collector reported {reported:,} of {n:,} lines within 120 s: {(tmp / 'collector.err').read_text()[-2000:]}")
    return (*best, idle, reported)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(quick: bool) -> list[Row]:
    return _throughput(quick) + _memory(quick)
