"""A real Prometheus (Debian's) scraping the demo's server: PromQL's per-edge request totals
equal the shop's own counts, and its per-edge rate during the load is the shop's rate.

The demo runs its whole shop (netlab, Envoy, collectors, node agents, server); Prometheus scrapes
the server's `/metrics` every 0.5 s with the demo's token. While the load runs, the rate of the
load generator -> frontend edge over 20 s is compared with the store's own count over the same
window (they differ by what one scrape interval and one collector interval can hold). After the
demo has drained (stored == captured, summary.json), the last scraped totals per edge equal the
shop's own counts exactly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from demo_harness import DemoRun, app_of_name_aggr, free_port

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.prometheus, pytest.mark.slow,
              pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="Debian's prometheus is not installed (scripts/setup.sh)")]

SCRAPE_S = 0.5


def _query(prom: str, q: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10)
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def test_prometheus_totals_equal_the_shops_counts(require_netns: None, tmp_path: Path) -> None:
    import json

    port, prom_port = free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    data = tmp_path / "data"
    run = DemoRun(["--duration", "45", "--port", str(port), "--prefix", f"dp{os.getpid()}",
                   "--seed", "11", "--rate", "4", "--interval", "1"], data, tmp_path / "state.json")
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        run.wait_for_url(300)
        token = data / "server" / "token"
        assert token.exists()
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": f"{int(SCRAPE_S * 1000)}ms", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "l7scope-demo", "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token)},
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
        with (tmp_path / "prometheus.log").open("wb") as out:
            prometheus = subprocess.Popen([
                "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{prom}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and prometheus.poll() is None, \
                (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(25)  # 20 s of steady load scraped
        rate = _query(prom, 'sum(rate(l7scope_requests_total{destination_service="frontend"}[20s]))')
        assert rate, "no frontend series scraped"
        during = float(rate[0]["value"][1])
        assert run.wait(300) == 0, run.text()[-3000:]
    finally:
        run.kill()
    try:
        summary = json.loads((data / "summary.json").read_text())
        assert summary["stored"] == summary["captured"] and summary["failed"] == 0, summary
        apps = app_of_name_aggr(data)
        # the last value each series had while the server ran
        last = _query(prom, "max_over_time(l7scope_requests_total[10m])")
        edges: dict[str, float] = {}
        for s in last:
            m = s["metric"]
            if m.get("destination_service") in ("", "-", None):
                continue  # calls to no Service (redis-cart over TCP is not HTTP)
            key = f"{apps.get(m['source_workload'], m['source_workload'])}->{m['destination_service']}"
            edges[key] = edges.get(key, 0.0) + float(s["value"][1])
        shop = summary["counts"]["edges"]
        print(f"PromQL: frontend rate during the load {during:.1f}/s; totals per edge {edges}; "
              f"shop {shop}")
        assert {k: int(v) for k, v in edges.items()} == {k: v for k, v in shop.items() if v}, (edges, shop)
        # the load generator's rate: its frontend requests over the load's duration (45 s)
        shop_rate = shop["loadgenerator->frontend"] / 45
        assert abs(during - shop_rate) <= 0.35 * shop_rate, (during, shop_rate)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(15)
