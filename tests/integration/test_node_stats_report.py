"""The node's counters reach Prometheus through the server (contracts/nodestats.py): a real
collector tails a real Envoy-format log and reports to a real node agent, which ships records and
sends its own and the collector's counters to a real `l7scope server`; the server's `/metrics`
then has both parts' counters with a `node` label and `/api/v1/status` lists the node. Then the
route's access rules on a server with one principal per role: only a writer may report."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from contract.harness import serve
from prometheus_client.parser import text_string_to_metric_families
from scope_support import ADMIN, SHOP, WRITER, Table
from test_node_shipping import free_port, wait_http

from l7scope.contracts import nodestats, policysync
from l7scope.contracts.auth import bearer, read_token
from l7scope.server.api import create_app
from l7scope.server.store.duckdb import DuckDBStore
from l7scope.testing import envoy_lines

pytestmark = [pytest.mark.slow]
LINES = 40


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


def test_node_and_collector_counters_in_the_servers_metrics(tmp_path: Path) -> None:
    port, agent_port, coll_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[Any]] = []

    def start(name: str, *args: str) -> subprocess.Popen[Any]:
        with open(logs / f"{name}.log", "ab") as out:
            p = subprocess.Popen([sys.executable, "-m", "l7scope", *args], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump({"policySyncPathPrefix": str(tmp_path / "nodeagent"),
                                        "l7LogsFileDirectory": str(tmp_path / "l7logs"),
                                        "l7LogsFlushInterval": "1s"}))
    envoy_log = tmp_path / "envoy.log"
    envoy_log.write_bytes(b"")
    token_file = tmp_path / "store" / "token"
    try:
        server = start("server", "server", "--port", str(port), "--data-dir", str(tmp_path / "store"))
        wait_http(f"{url}/healthz", server, logs / "server.log")
        agent = start("agent", "node", "--settings", str(settings), "--node-name", "node-7",
                      "--server", url, "--server-token-file", str(token_file),
                      "--status-addr", f"127.0.0.1:{agent_port}", "--data-dir", str(tmp_path / "agent"),
                      "--collector-stats-url", f"http://127.0.0.1:{coll_port}/stats",
                      "--stats-report-seconds", "1")
        wait_http(f"http://127.0.0.1:{agent_port}/healthz", agent, logs / "agent.log")
        coll = start("collector", "collector", "--envoy-log", str(envoy_log), "--interval", "1",
                     "--dial-target", f"unix://{policysync.socket_path(tmp_path / 'nodeagent')}",
                     "--status-addr", f"127.0.0.1:{coll_port}", "--node-name", "node-7")
        wait_http(f"http://127.0.0.1:{coll_port}/healthz", coll, logs / "collector.log")
        with envoy_log.open("ab") as f:
            f.write(b"".join(line + b"\n" for line in envoy_lines.lines(LINES)))
        auth = bearer(read_token(token_file))

        def metrics() -> str:
            r = httpx.get(f"{url}/metrics", headers=auth, timeout=10)
            assert r.status_code == 200, r.text
            return r.text

        deadline = time.monotonic() + 30
        text = metrics()
        node = (("node", "node-7"),)
        while time.monotonic() < deadline and not (
                samples(text, "l7scope_collector_lines_read_total").get(node) == LINES
                and samples(text, "l7scope_node_agent_requests_seen_total").get(node) == LINES
                and samples(text, "l7scope_node_agent_records_shipped_total").get(node, 0) > 0):
            time.sleep(0.5)
            text = metrics()
        agent_stats = httpx.get(f"http://127.0.0.1:{agent_port}/stats").json()
        print(f"server /metrics for node-7: collector lines_read "
              f"{samples(text, 'l7scope_collector_lines_read_total').get(node)}, node agent requests_seen "
              f"{samples(text, 'l7scope_node_agent_requests_seen_total').get(node)}, reports sent "
              f"{agent_stats['stats_reports_sent']}")
        assert samples(text, "l7scope_collector_lines_read_total").get(node) == LINES
        assert samples(text, "l7scope_node_agent_requests_seen_total").get(node) == LINES
        assert samples(text, "l7scope_node_agent_records_shipped_total").get(node, 0) > 0
        drops = samples(text, "l7scope_node_agent_dropped_total")
        assert drops and all(v == 0 for v in drops.values()), drops
        assert agent_stats["stats_reports_sent"] > 0 and agent_stats["stats_report_errors"] == 0
        status = httpx.get(f"{url}/api/v1/status", headers=auth, timeout=10).json()
        (entry,) = status["nodes"]
        assert entry["node"] == "node-7" and entry["parts"] == ["collector", "node-agent"]
        assert entry["age_s"] < 5 and entry["dropped"] == {"collector": 0, "node-agent": 0}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_only_a_writer_may_report(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "l7.duckdb")
    app = create_app(store, auth=Table(), ui_dir=None)
    body = nodestats.encode(nodestats.NodeStatsReport(node="n1", parts={"node-agent": {"records_shipped": 4}}))
    json_ct = {"Content-Type": nodestats.CONTENT_TYPE}
    try:
        with serve(app) as u:
            post = u + nodestats.NODE_STATS_PATH
            assert httpx.post(post, content=body, headers=json_ct).status_code == 401
            for reader in (ADMIN, SHOP):
                r = httpx.post(post, content=body, headers=bearer(reader) | json_ct)
                assert r.status_code == 403, r.text
            r = httpx.post(post, content=b'{"node": "n1", "parts": {"db": {}}}', headers=bearer(WRITER) | json_ct)
            assert r.status_code == 400 and "unknown part" in r.json()["error"]["message"], r.text
            r = httpx.post(post, content=b"x" * (nodestats.MAX_BODY_BYTES + 1), headers=bearer(WRITER) | json_ct)
            assert r.status_code == 413, r.text
            r = httpx.post(post, content=body, headers=bearer(WRITER) | json_ct)
            assert r.status_code == 200 and r.json() == {"node": "n1", "stored": True}, r.text
            # the writer cannot read them back; a cluster-wide reader can; a namespace reader not
            assert httpx.get(u + "/metrics", headers=bearer(WRITER)).status_code == 403
            assert httpx.get(u + "/metrics", headers=bearer(SHOP)).status_code == 403
            text = httpx.get(u + "/metrics", headers=bearer(ADMIN)).text
            assert samples(text, "l7scope_node_agent_records_shipped_total") == {(("node", "n1"),): 4.0}
    finally:
        store.close()
