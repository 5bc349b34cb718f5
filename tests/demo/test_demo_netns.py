"""Acceptance of `l7scope demo` (issue 5), run the way a user runs it.

- the page comes up; within 30 s of the URL being printed the service graph holds all 11
  services and every caller -> callee edge of the shop;
- after `--duration 60` the sum of `count` in the store equals the shop's own count of
  completed requests, exactly (read from the store file after the demo exited, and from the
  demo's summary);
- afterwards no network namespace, nftables table or process of the demo remains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from demo_harness import (
    DemoRun,
    app_of_name_aggr,
    free_port,
    open_login_link,
    processes_mentioning,
    service_graph,
)

from l7scope.demo import probe
from l7scope.demo.shop import catalog

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(600)]


def _netns_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if ln.startswith(f"{prefix}-")]


def _host_nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def test_demo_graph_exact_counts_and_cleanup(require_netns: None, tmp_path: Path) -> None:
    prefix = f"dm{os.getpid()}"
    data = tmp_path / "data"
    port = free_port()
    tables_before = _host_nft_tables()
    run = DemoRun(["--duration", "60", "--port", str(port), "--prefix", prefix, "--seed", "11",
                   "--rate", "5"], data, tmp_path / "state.json")
    try:
        url = run.wait_for_url(300)
        printed = time.monotonic()
        page = open_login_link(url)  # the page itself, logged in by the printed link

        app_of = app_of_name_aggr(data)
        want_services = {s.name for s in catalog.SERVICES}
        want_edges = catalog.edges()
        services: set[str] = set()
        edges: set[tuple[str, str]] = set()
        while time.monotonic() - printed < 30:
            graph = service_graph(page)
            services = probe.graph_services(graph)
            edges = probe.graph_edges(graph, app_of.get)
            if services >= want_services and edges >= want_edges:
                break
            time.sleep(1)
        took = time.monotonic() - printed
        assert services >= want_services, f"missing services {want_services - services}"
        assert edges >= want_edges, f"missing edges {want_edges - edges}"
        print(f"service graph complete {took:.1f} s after the URL was printed")

        assert run.wait(240) == 0, run.text()[-3000:]
    finally:
        run.kill()

    summary = json.loads((data / "summary.json").read_text())
    assert summary["sent"] > 1000, summary
    assert summary["failed"] == 0, summary
    with duckdb.connect(str(data / "server" / "l7.duckdb"), read_only=True) as con:
        (stored,) = con.execute("SELECT coalesce(sum(count), 0) FROM l7").fetchone()  # type: ignore[misc]
    print(f"shop's own count {summary['sent']}, sum(count) in the store {stored}, "
          f"drops {summary['drops']}")
    assert stored == summary["sent"] == summary["stored"], summary
    # and per caller -> callee: the store's records name the right pods and Services
    assert summary["edge_mismatches"] == {}, summary
    assert set(summary["store_edges"]) == {f"{a}->{b}" for a, b in catalog.edges()}

    assert _netns_with(prefix) == []
    assert _host_nft_tables() == tables_before
    assert processes_mentioning(str(data)) == []
    assert processes_mentioning(f"{prefix}-") == []


def test_second_run_cleans_up_after_a_crash(require_netns: None, tmp_path: Path) -> None:
    prefix = f"dc{os.getpid()}"
    data = tmp_path / "data"
    port = free_port()
    first = DemoRun(["--port", str(port), "--prefix", prefix, "--rate", "2"], data,
                    tmp_path / "state.json")
    try:
        first.wait_for_url(300)
        server_pid = int((data / "server.pid").read_text())
        os.kill(first.proc.pid, 9)  # the demo process dies; its children live on
        first.proc.wait(10)
        assert _netns_with(prefix), "a crash should leave namespaces behind"
        assert processes_mentioning(str(data)), "a crash should leave processes behind"

        second = DemoRun(["--duration", "5", "--port", str(port), "--prefix", prefix,
                          "--rate", "2"], data, tmp_path / "state.json")
        try:
            assert second.wait(300) == 0, second.text()[-3000:]
            assert "stale namespaces of an earlier run" in second.text()
        finally:
            second.kill()
        assert not Path(f"/proc/{server_pid}").exists() or \
            "Z" in Path(f"/proc/{server_pid}/stat").read_text().split(") ", 1)[1][:1]
    finally:
        first.kill()
        subprocess.run([sys.executable, "-c", "from l7scope.netlab import cleanup_stale; "
                        f"cleanup_stale({prefix!r})"], check=False)
    assert _netns_with(prefix) == []
    assert processes_mentioning(str(data)) == []


def test_ctrl_c_stops_drains_and_cleans_up(require_netns: None, tmp_path: Path) -> None:
    prefix = f"di{os.getpid()}"
    data = tmp_path / "data"
    run = DemoRun(["--port", str(free_port()), "--prefix", prefix, "--rate", "5"], data,
                  tmp_path / "state.json")
    try:
        run.wait_for_url(300)
        time.sleep(10)
        os.killpg(run.proc.pid, 2)  # Ctrl-C in the terminal
        assert run.wait(180) == 0, run.text()[-3000:]
    finally:
        run.kill()
    assert "every request accounted for" in run.text()
    summary = json.loads((data / "summary.json").read_text())
    assert summary["sent"] > 0 and summary["stored"] == summary["sent"], summary
    assert _netns_with(prefix) == []
    assert processes_mentioning(str(data)) == []
    assert not (tmp_path / "state.json").exists()  # `l7scope status` no longer sees it
