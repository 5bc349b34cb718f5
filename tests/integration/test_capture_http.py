"""Acceptance: HTTP/1.1 capture through real TPROXY + Envoy in a node namespace.

Two client pods send 1,000 requests (mixed methods, paths, 2xx/4xx/5xx, request and response
bodies) to a selected Service VIP whose endpoints run on two nodes, and 200 requests to a
Service that is not selected. Envoy's JSON log must hold exactly the 1,000, each with the right
method, path, status, byte counts, client and original destination (the VIP), and none of the
200; the clients must get exactly what the servers answered. The real collector (`l7scope
collector`, in the node namespace, as in a hostNetwork DaemonSet) tails that log and must report
the same 1,000 requests to a Policy Sync server run by the test.

The same test runs on an IPv4, an IPv6-only and a dual-stack netlab (in the dual-stack one the
first client calls the IPv4 ClusterIP, the second the IPv6 one).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from capture_support import topology, wait_log

from l7scope.contracts import envoy_log, policysync_pb2, policysync_pb2_grpc
from l7scope.netlab import Pod, Service, Topology
from l7scope.proxy import admin
from l7scope.proxy.supervisor import EnvoySupervisor

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
STATUSES = [200, 200, 200, 201, 202, 400, 404, 404, 500, 503]
SELECTED_PER_CLIENT = 500
UNSELECTED_PER_CLIENT = 100

Key = tuple[str, str, str, int, int, int, str]  # client ip, method, path, status, rx, tx, ua


class PolicySync(policysync_pb2_grpc.PolicySyncServicer):  # type: ignore[misc]
    """The node agent's end of Report(), recording every DataplaneStats it gets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports: list[Any] = []

    def Report(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.reports.append(request)
        return policysync_pb2.ReportResult(successful=True)

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.reports)


@dataclass
class Collector:
    sink: PolicySync
    server: Any
    proc: subprocess.Popen[Any]
    node_netns: str
    status_port: int = 19902

    def requests(self) -> int:
        return sum(d.count for r in self.sink.snapshot() for d in r.http_data)


@dataclass
class Lab:
    topo: Topology
    clients: list[Pod]
    shop: Service
    other: Service
    envoy: EnvoySupervisor
    collector: Collector | None = field(default=None)

    def target(self, k: int, svc: Service) -> tuple[str, str, str]:
        """(client ip, VIP, VIP:port) client `k` uses: in dual stack the second one uses
        IPv6."""
        pod = self.clients[k]
        if k == 1 and svc.vip6 and pod.ip6:
            return pod.ip6, svc.vip6, svc.address6
        return pod.ip, svc.vip, svc.address

    @property
    def log_path(self) -> Path:
        return Path(self.envoy.settings.access_log_path)


@pytest.fixture(scope="module", params=["ipv4", "ipv6", "dual"])
def lab(request: pytest.FixtureRequest) -> Lab:
    topo = topology(request, request.param)
    n1, n2 = topo.add_node("n1"), topo.add_node("n2")
    clients = [topo.add_pod(n1, "client1"), topo.add_pod(n1, "client2")]
    web = [topo.add_pod(n1, "web1"), topo.add_pod(n2, "web2")]
    other_pod = topo.add_pod(n2, "other")
    for pod in (*web, other_pod):
        topo.start_server(pod, "http", 8080)
    shop = topo.add_service("shop", 80, [(p, 8080) for p in web])
    other = topo.add_service("other", 80, [(other_pod, 8080)])
    topo.capture(n1, [shop])  # `other` is not annotated: never captured
    envoy = topo.start_envoy(n1)
    return Lab(topo, clients, shop, other, envoy, start_collector(request, topo, envoy, n1.netns))


def start_collector(request: pytest.FixtureRequest, topo: Topology, envoy: EnvoySupervisor,
                    netns: str) -> Collector:
    sock = topo.workdir / "policysync.sock"
    sink = PolicySync()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    policysync_pb2_grpc.add_PolicySyncServicer_to_server(sink, server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    request.addfinalizer(lambda: server.stop(grace=None))
    cli = str(Path(sys.executable).parent / "l7scope")
    proc = topo.popen(topo.nodes["n1"], [
        cli, "collector", "--envoy-log", envoy.settings.access_log_path,
        "--dial-target", f"unix://{sock}", "--interval", "1", "--requests-per-interval", "-1",
        "--node-name", "n1", "--no-checkpoint", "--status-addr", "127.0.0.1:19902"])
    col = Collector(sink, server, proc, netns)
    deadline = time.monotonic() + 20
    while True:  # ready when its status endpoint answers (it then tails from the log's end)
        assert proc.poll() is None, topo.log_path(topo.nodes["n1"], [cli])
        try:
            if admin.request("127.0.0.1", col.status_port, "/healthz", netns=netns)[0] == 200:
                break
        except admin.AdminError:
            pass
        assert time.monotonic() < deadline, "collector did not come up"
        time.sleep(0.1)
    return col


def make_plan(rng: random.Random, n: int, user_agent: str) -> list[dict[str, Any]]:
    plan = []
    for i in range(n):
        method = rng.choice(METHODS)
        status = rng.choice(STATUSES)
        path = (f"/api/items/{i % 13}" if status == 200
                else f"/status/{status}/{rng.choice(['cart', 'pay', 'ship'])}")
        plan.append({
            "method": method,
            "path": path,
            "body_bytes": rng.randint(1, 3000) if method in ("POST", "PUT", "PATCH") else 0,
            "reply_bytes": rng.randint(0, 4000),
            "user_agent": user_agent,
        })
    return plan


def expected_status(req: dict[str, Any]) -> int:
    parts = req["path"].split("/")
    return int(parts[2]) if parts[1] == "status" else 200


Job = tuple[Pod, Service, list[dict[str, Any]], tuple[str, str, str]]


def run_clients(lab: Lab, jobs: list[Job]) -> list[dict[str, Any]]:
    """Run one loadgen per job in its pod, all at once; returns their JSON outputs."""
    procs = []
    for pod, _, plan, (_, _, addr) in jobs:
        argv = lab.topo.python("l7scope.netlab.loadgen", "--target", addr,
                               "--per-connection", "50")
        proc = lab.topo.popen(pod, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
        procs.append((proc, json.dumps(plan)))
    outputs = []
    for proc, plan_json in procs:
        out, _ = proc.communicate(plan_json, timeout=120)
        assert proc.returncode == 0, lab.topo.log_path(None, ["loadgen"])
        outputs.append(json.loads(out))
    return outputs


def expected_key(client_ip: str, req: dict[str, Any]) -> Key:
    sent = 0 if req["method"] == "HEAD" else req["reply_bytes"]
    return (client_ip, req["method"], req["path"], expected_status(req), req["body_bytes"], sent,
            req["user_agent"])


def logged_key(line: dict[str, Any]) -> Key:
    ip, _ = envoy_log.split_address(line["downstream_remote_address"])
    return (ip, line["request_method"], line["request_path"], line["response_code"],
            line["bytes_received"], line["bytes_sent"], line["user_agent"])


def test_http1_requests_to_selected_vip_are_logged_exactly(lab: Lab) -> None:
    rng = random.Random(20261126)
    jobs: list[Job] = []
    for k, pod in enumerate(lab.clients):
        jobs.append((pod, lab.shop, make_plan(rng, SELECTED_PER_CLIENT, f"client{k + 1}-agent"),
                     lab.target(k, lab.shop)))
        jobs.append((pod, lab.other, make_plan(rng, UNSELECTED_PER_CLIENT,
                                               f"client{k + 1}-other"), lab.target(k, lab.other)))
    shop_targets = {t[3][2]: t[3][1] for t in jobs if t[1] is lab.shop}  # VIP:port -> VIP
    other_vips = {t[3][1] for t in jobs if t[1] is lab.other}

    outputs = run_clients(lab, jobs)

    # Every client got exactly what the server answered (the proxy changed nothing).
    for (_, _, plan, _), out in zip(jobs, outputs, strict=True):
        assert out["errors"] == 0
        want = [[expected_status(r), 0 if r["method"] == "HEAD" else r["reply_bytes"]]
                for r in plan]
        assert out["results"] == want

    expected = Counter(expected_key(target[0], req)
                       for _, svc, plan, target in jobs if svc is lab.shop for req in plan)
    assert sum(expected.values()) == 1000

    lines = wait_log(lab.log_path, 1000)
    assert len(lines) == 1000  # and not one of the 200 unselected requests
    assert Counter(logged_key(line) for line in lines) == expected
    for line in lines:
        vip = shop_targets[line["downstream_local_address"]]  # the original destination
        assert line["type"] == "HTTP/1.1" and line["protocol"] == "HTTP/1.1"
        assert line["reporter"] == "destination"
        # Host as the client sent it (an IPv6 literal in brackets)
        assert line["domain"] == (f"[{vip}]" if ":" in vip else vip)
        assert line["request_id"]
    assert not any(v in json.dumps(line) for line in lines for v in other_vips)
    # in dual stack both families were captured
    assert {ln["downstream_local_address"] for ln in lines} == set(shop_targets)

    # The collector reported the same 1,000 requests (no cap), per client connection.
    assert lab.collector is not None
    deadline = time.monotonic() + 30
    while lab.collector.requests() < 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)  # two more intervals: nothing else may arrive
    reports = lab.collector.sink.snapshot()
    assert lab.collector.requests() == 1000
    got_count: Counter[tuple[str, str, str, int, str]] = Counter()
    got_bytes: dict[tuple[str, str, str, int, str], list[int]] = defaultdict(lambda: [0, 0])
    want_bytes: dict[tuple[str, str, str, int, str], list[int]] = defaultdict(lambda: [0, 0])
    for (ip, method, path, status, rx, tx, ua), n in expected.items():
        want_bytes[(ip, method, path, status, ua)][0] += rx * n
        want_bytes[(ip, method, path, status, ua)][1] += tx * n
    counted = 0
    for r in reports:
        assert r.dst_ip in shop_targets.values() and r.dst_port == lab.shop.port
        assert r.src_ip in {t[3][0] for t in jobs}
        assert r.reporter_node == "n1"
        counted += sum(st.value for st in r.stats
                       if st.kind == policysync_pb2.Statistic.HTTP_DATA)
        for d in r.http_data:
            key = (r.src_ip, d.request_method, d.request_path, d.response_code, d.user_agent)
            assert d.type == "HTTP/1.1"
            got_count[key] += d.count
            got_bytes[key][0] += d.bytes_received_total
            got_bytes[key][1] += d.bytes_sent_total
    assert counted == 1000  # the per-connection request counts agree
    want_count: Counter[tuple[str, str, str, int, str]] = Counter()
    for (ip, method, path, status, _rx, _tx, ua), n in expected.items():
        want_count[(ip, method, path, status, ua)] += n
    assert got_count == want_count
    assert dict(got_bytes) == dict(want_bytes)
