"""Nothing lost, nothing counted twice: the real server (`l7scope server`, DuckDB) is down for
30 s while Reports keep arriving, and the node agent (`l7scope node`) is restarted once during
the outage. Afterwards the server holds every request exactly once (sum of `count` equals what
was reported).

The load comes from gRPC clients speaking the collector's side of the Policy Sync contract
(one Report per tuple, exact counts, retried until the agent accepts it, as a collector would),
so the test isolates agent + server; the full Envoy -> collector path is covered by the demo.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from l7scope.contracts import policysync
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts import policysync_pb2_grpc as pb_grpc
from l7scope.contracts.auth import bearer, read_token

pytestmark = [pytest.mark.slow]

OUTAGE_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def l7scope(*args: str) -> list[str]:
    return [sys.executable, "-m", "l7scope", *args]


class Load(threading.Thread):
    """Reports at a steady rate; `sent` counts requests in accepted Reports only."""

    def __init__(self, sock: Path, rate: float = 200.0) -> None:
        super().__init__(daemon=True)
        self.target = policysync.dial_target(sock)
        self.rate = rate
        self.sent = 0
        self.retries = 0
        self.stop_event = threading.Event()
        self.rng = random.Random(7)

    def report(self, i: int) -> pb.DataplaneStats:
        entries = []
        for k in range(self.rng.randint(1, 3)):
            entries.append(pb.HTTPData(
                request_path=f"/api/{self.rng.randint(0, 50)}/{k}", request_method="GET",
                response_code=self.rng.choice([200, 200, 404, 500]), domain="web.shop",
                count=self.rng.randint(1, 20), duration=self.rng.randint(1, 9), type="HTTP/1.1"))
        seen = sum(e.count for e in entries) + self.rng.choice([0, 0, 0, 5])  # some overflow
        return pb.DataplaneStats(
            src_ip=f"10.244.0.{2 + i % 50}", dst_ip="10.96.0.10", src_port=30000 + i % 20000,
            dst_port=80, protocol=pb.Protocol(name="tcp"), http_data=entries,
            stats=[pb.Statistic(direction=pb.Statistic.IN, relativity=pb.Statistic.DELTA,
                                kind=pb.Statistic.HTTP_DATA, action=pb.ALLOWED, value=seen)])

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        channel = grpc.insecure_channel(self.target)
        stub = pb_grpc.PolicySyncStub(channel)
        while not self.stop_event.is_set():
            ds = self.report(i)
            count = max(sum(s.value for s in ds.stats), sum(e.count for e in ds.http_data))
            while not self.stop_event.is_set():
                try:
                    if stub.Report(ds, timeout=2).successful:
                        self.sent += count
                        break
                except grpc.RpcError:
                    channel.close()  # the agent restarts: dial again
                    channel = grpc.insecure_channel(self.target)
                    stub = pb_grpc.PolicySyncStub(channel)
                self.retries += 1
                time.sleep(0.05)
            i += 1
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        channel.close()


def server_total(url: str, token_file: Path) -> int:
    r = httpx.post(f"{url}/api/v1/l7/logs/search", json={
        "selector": "", "time_range": {"from": 0, "to": "now"}, "page_size": 1}, timeout=10,
        headers=bearer(read_token(token_file)))
    r.raise_for_status()
    return int(r.json()["total_requests"])


def wait_http(url: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not up: {log.read_text()[-2000:]}")


def test_server_outage_and_agent_restart_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    port, status_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[Any]] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, argv: list[str]) -> subprocess.Popen[Any]:
        with open(logs / f"{name}.log", "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    token_file = tmp_path / "store" / "token"

    def start_server() -> subprocess.Popen[Any]:
        p = start("server", l7scope("server", "--port", str(port),
                                    "--data-dir", str(tmp_path / "store")))
        wait_http(f"{url}/healthz", p, logs / "server.log")
        return p

    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump({
        "policySyncPathPrefix": str(tmp_path / "nodeagent"),
        "l7LogsFileDirectory": str(tmp_path / "l7logs"), "l7LogsFlushInterval": "1s"}))

    def start_agent() -> subprocess.Popen[Any]:
        p = start("agent", l7scope("node", "--settings", str(settings), "--node-name", "n1",
                                   "--server", url, "--server-token-file", str(token_file),
                                   "--status-addr", f"127.0.0.1:{status_port}",
                                   "--data-dir", str(tmp_path / "agent")))
        wait_http(f"http://127.0.0.1:{status_port}/healthz", p, logs / "agent.log")
        return p

    load = Load(policysync.socket_path(tmp_path / "nodeagent"))
    try:
        server = start_server()
        agent = start_agent()
        load.start()
        time.sleep(3)
        server.kill()  # crash, not a clean stop
        server.wait()
        outage_started = time.monotonic()
        time.sleep(OUTAGE_S / 2)
        stats = httpx.get(f"http://127.0.0.1:{status_port}/stats").json()
        assert stats["spool_batches"] > 0 and stats["ship_error"]
        agent.send_signal(signal.SIGTERM)  # restart the agent during the outage
        agent.wait(20)
        agent = start_agent()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        server = start_server()
        time.sleep(3)
        load.stop_event.set()
        load.join(10)
        sent = load.sent
        assert sent > 0
        deadline = time.monotonic() + 30
        total = server_total(url, token_file)
        while total != sent and time.monotonic() < deadline:
            time.sleep(0.5)
            total = server_total(url, token_file)
        stats = httpx.get(f"http://127.0.0.1:{status_port}/stats").json()
        print(f"reported {sent} requests ({load.retries} Report retries); server holds {total}; "
              f"agent after restart: {json.dumps({k: stats[k] for k in ('records_shipped', 'batches_duplicate', 'records_dropped', 'spool_batches')})}")
        assert total == sent
        assert stats["records_dropped"] == 0 and stats["spool_batches"] == 0
        # the same counters as Prometheus text on the status port (contracts/status_metrics.py)
        text = httpx.get(f"http://127.0.0.1:{status_port}/metrics").text
        samples = {smp.name: smp.value for fam in text_string_to_metric_families(text)
                   for smp in fam.samples if not smp.labels}
        assert samples["l7scope_node_agent_records_shipped_total"] == stats["records_shipped"] > 0
        assert samples["l7scope_node_agent_requests_seen_total"] == stats["requests_seen"]
        assert samples["l7scope_node_agent_shipping"] == 1.0
    finally:
        load.stop_event.set()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
