"""Smoke test of the `--no-netns` fallback: loopback addresses, explicit Envoy listeners,
same collector, node agent and server. The page comes up, the graph fills, the counts match,
and nothing is left running."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from demo_harness import (
    DemoRun,
    app_of_name_aggr,
    free_port,
    open_login_link,
    processes_mentioning,
    service_graph,
    url_counts,
)

from l7scope.demo import probe
from l7scope.demo.shop import catalog

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]


def test_no_netns_fallback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = DemoRun(["--no-netns", "--duration", "25", "--port", str(free_port()),
                   "--prefix", f"nn{os.getpid()}", "--seed", "3", "--rate", "5"],
                  data, tmp_path / "state.json")
    try:
        url = run.wait_for_url(120)
        assert "FALLBACK" in run.text()
        page = open_login_link(url)
        printed = time.monotonic()
        services: set[str] = set()
        while time.monotonic() - printed < 30:
            graph = service_graph(page)
            services = probe.graph_services(graph)
            if services >= {s.name for s in catalog.SERVICES}:
                break
            time.sleep(1)
        assert services >= {s.name for s in catalog.SERVICES}
        edges = probe.graph_edges(service_graph(page), app_of_name_aggr(data).get)
        assert ("frontend", "cartservice") in edges and ("cartservice", "redis-cart") in edges
        # the product pages (ten ids, plus bad ones) are one route (the demo's l7RouteTemplates)
        products = {u: n for u, n in url_counts(page).items() if "/product/" in u}
        assert len(products) == 1 and next(iter(products)).endswith("/product/{id}"), products
        assert next(iter(products.values())) > 10, products
        assert run.wait(180) == 0, run.text()[-3000:]
    finally:
        run.kill()
    summary = json.loads((data / "summary.json").read_text())
    assert summary["sent"] > 100 and summary["failed"] == 0
    assert summary["stored"] == summary["sent"], summary
    assert summary["edge_mismatches"] == {}, summary
    assert processes_mentioning(str(data)) == []


def test_no_netns_second_run_cleans_up_after_a_crash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    args = ["--no-netns", "--port", str(port), "--prefix", f"nc{os.getpid()}", "--rate", "2"]
    first = DemoRun(args, data, tmp_path / "state.json")
    try:
        first.wait_for_url(300)
        os.kill(first.proc.pid, 9)  # the demo dies; server, Envoy, pods live on
        first.proc.wait(10)
        assert processes_mentioning(str(data))
        second = DemoRun([*args, "--duration", "5"], data, tmp_path / "state.json")
        try:
            assert second.wait(300) == 0, second.text()[-3000:]
        finally:
            second.kill()
    finally:
        first.kill()
    summary = json.loads((data / "summary.json").read_text())
    assert summary["stored"] == summary["sent"] > 0, summary
    assert processes_mentioning(str(data)) == []
