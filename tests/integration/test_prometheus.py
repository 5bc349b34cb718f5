"""A real Prometheus (Debian's 2.42 binary, started here with its own config, data dir and port)
scrapes a real `l7scope server` with its bearer token while the test ships records with known
per-edge rates; PromQL answers the exact totals per edge and a `rate()` per edge equal to the sent
rate within one scrape interval's share of the window; the latency histogram and byte counters
carry the same edges (docs/metrics.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from contract.harness import free_port

from l7scope.contracts import latency, nodestats
from l7scope.contracts.auth import bearer, read_token
from l7scope.contracts.bulk import BULK_PATH
from l7scope.contracts.record import L7Record, encode_records

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(180),
              pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed "
                                 "(scripts/setup.sh)")]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "l7scope-edges.json"
SCRAPE_S = 1.0
WINDOW_S = 10
#: (source workload, destination Service) -> requests per second, shipped every 0.5 s
RATES = {("frontend-*", "cart"): 10, ("frontend-*", "ads"): 4, ("checkout-*", "cart"): 2}


def _record(src: str, svc: str, n: int, now: int) -> L7Record:
    return L7Record(start_time=now - 1, end_time=now, count=n, src_name_aggr=src,
                    src_namespace="shop", src_type="wep", dest_name_aggr=f"{svc}-*",
                    dest_namespace="shop", dest_type="wep", dest_service_name=svc,
                    dest_service_namespace="shop", dest_service_port=80, url=f"{svc}/item/{{id}}",
                    response_code="200", method="GET", type="HTTP/1.1", bytes_in=100 * n,
                    bytes_out=1000 * n, duration_mean=3_000_000, duration_max=3_000_000,
                    duration_hist=latency.to_wire({latency.bucket_of(3000): n}))


def _wait(url: str, proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not up: {log.read_text()[-2000:]}")


def _query(prom: str, q: str) -> dict[tuple[str, str], float]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    return {(m["metric"].get("source_workload", ""), m["metric"].get("destination_service", "")):
            float(m["value"][1]) for m in res}


def _by_node(prom: str, q: str) -> dict[str, float]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10)
    r.raise_for_status()
    return {m["metric"].get("node", ""): float(m["value"][1]) for m in r.json()["data"]["result"]}


def _dashboard_queries_run(prom: str) -> None:
    """Every query of deploy/grafana/l7scope-edges.json is valid PromQL for this Prometheus; the
    per-edge panels show the shipped edges (the status-port panels have no target here)."""
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel["targets"]:
            q = target["expr"].replace("$__rate_interval", f"{WINDOW_S}s").replace("$namespace", ".*")
            r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "success", (q, r.text)
            if "l7scope_request" in q and "5xx" not in q:
                assert r.json()["data"]["result"], (panel["title"], q)


def test_prometheus_rates_per_edge_equal_the_sent_rates(tmp_path: Path) -> None:
    port, prom_port = free_port(), free_port()
    url, prom = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{prom_port}"
    procs: list[subprocess.Popen[Any]] = []
    token_file = tmp_path / "store" / "token"
    try:
        with (tmp_path / "server.log").open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "l7scope", "server", "--port",
                                           str(port), "--data-dir", str(tmp_path / "store")],
                                          stdout=out, stderr=out, stdin=subprocess.DEVNULL))
        _wait(f"{url}/healthz", procs[0], tmp_path / "server.log")
        assert httpx.get(f"{url}/metrics").status_code == 401  # Prometheus needs the token too
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "l7scope-server", "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
        with (tmp_path / "prometheus.log").open("wb") as out:
            procs.append(subprocess.Popen([
                str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL))
        _wait(f"{prom}/-/ready", procs[1], tmp_path / "prometheus.log")

        sent: dict[tuple[str, str], int] = dict.fromkeys(RATES, 0)
        stop = threading.Event()
        errors: list[str] = []

        def ship() -> None:
            headers = {**bearer(read_token(token_file)), "Content-Type": "application/x-ndjson"}
            with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
                next_at = time.monotonic()
                while not stop.is_set():
                    now = int(time.time())
                    recs = [_record(src, svc, rate // 2, now) for (src, svc), rate in RATES.items()]
                    r = c.post(BULK_PATH, content=encode_records(recs))
                    if r.status_code != 200:
                        errors.append(r.text)
                    for (src, svc), rate in RATES.items():
                        sent[(src, svc)] += rate // 2
                    next_at += 0.5
                    time.sleep(max(0.0, next_at - time.monotonic()))

        shipper = threading.Thread(target=ship, daemon=True)
        shipper.start()
        time.sleep(WINDOW_S + 5 * SCRAPE_S)
        rates = _query(prom, f"sum by (source_workload, destination_service) "
                             f"(rate(l7scope_requests_total[{WINDOW_S}s]))")
        stop.set()
        shipper.join(10)
        assert not errors, errors[:3]
        print("PromQL rates per edge:", rates)
        assert set(rates) == set(RATES), rates
        for edge, want in RATES.items():
            # one scrape interval of a WINDOW_S window: at most want * SCRAPE_S / WINDOW_S off
            assert abs(rates[edge] - want) <= want * SCRAPE_S / WINDOW_S + 1e-9, (edge, rates)

        time.sleep(3 * SCRAPE_S)  # the last batch scraped
        totals = _query(prom, "sum by (source_workload, destination_service) (l7scope_requests_total)")
        assert totals == {e: float(n) for e, n in sent.items()}, (totals, sent)
        counts = _query(prom, "sum by (source_workload, destination_service) "
                              "(l7scope_request_duration_seconds_count)")
        assert counts == totals
        under_5ms = _query(prom, "sum by (source_workload, destination_service) "
                                 "(l7scope_request_duration_seconds_bucket{le=\"0.005\"})")
        over_nothing = _query(prom, "sum by (source_workload, destination_service) "
                                    "(l7scope_request_duration_seconds_bucket{le=\"0.0025\"})")
        assert under_5ms == totals and set(over_nothing.values()) == {0.0}  # 3 ms each
        resp = _query(prom, "sum by (source_workload, destination_service) "
                            "(l7scope_response_bytes_total)")
        assert resp == {e: 1000.0 * n for e, n in sent.items()}
        # a node agent's counters, reported to the server, reach Prometheus with a node label
        report = nodestats.NodeStatsReport(node="node-p", parts={
            "node-agent": {"records_shipped": 1234, "records_dropped": 0, "shipping": True},
            "collector": {"lines_read": 99, "bad_lines": 2}})
        r = httpx.post(url + nodestats.NODE_STATS_PATH, content=nodestats.encode(report), timeout=10,
                       headers={**bearer(read_token(token_file)), "Content-Type": nodestats.CONTENT_TYPE})
        assert r.status_code == 200, r.text
        time.sleep(3 * SCRAPE_S)
        assert _by_node(prom, "max by (node) (l7scope_node_agent_records_shipped_total)") == {"node-p": 1234.0}
        assert _by_node(prom, 'sum by (node) (l7scope_collector_dropped_total{counter="bad_lines"})') == {"node-p": 2.0}
        routes = httpx.get(f"{prom}/api/v1/label/route/values", timeout=10).json()["data"]
        assert sorted(routes) == ["/item/{id}"]
        _dashboard_queries_run(prom)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
