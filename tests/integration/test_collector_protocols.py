"""The collector on the real data path for the non-HTTP/1 chains: a real gRPC call over h2c
(path `/package.Service/Method`, grpc-status per call), TLS passthrough (SNI, type tls) and plain
TCP (type tcp), from a client pod through TPROXY + Envoy, reported over Policy Sync.

Topology: two nodes; the client pod, Envoy, the capture rules and `l7scope collector` on n1 (the
collector in n1's namespace, as in a hostNetwork DaemonSet); servers behind Service VIPs.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from capture_support import GRPC_CLIENT, protocol_pods, topology
from collector_support import RecorderServer

from l7scope.proxy import admin

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

SNI = "shop.example"
STATUS_PORT = 19931


def test_h2c_grpc_tls_and_tcp_are_reported(request: pytest.FixtureRequest) -> None:
    topo = topology(request)
    n1, n2 = topo.add_node("n1"), topo.add_node("n2")
    pods = protocol_pods(topo, n1, n2, SNI)
    client, cert = pods.client, pods.cert
    grpc_svc, tls_svc, tcp_svc = pods.grpc, pods.tls, pods.tcp
    topo.capture(n1, [grpc_svc, tls_svc, tcp_svc])
    envoy = topo.start_envoy(n1)

    srv = RecorderServer(topo.workdir / "policysync.sock").start()
    request.addfinalizer(srv.stop)
    cli = str(Path(sys.executable).parent / "l7scope")
    proc = topo.popen(n1, [cli, "collector", "--envoy-log", envoy.settings.access_log_path,
                           "--dial-target", srv.target, "--interval", "0.5",
                           "--node-name", "n1", "--no-checkpoint",
                           "--status-addr", f"127.0.0.1:{STATUS_PORT}"])
    deadline = time.monotonic() + 20
    while True:  # ready when its status endpoint answers (it then tails from the log's end)
        assert proc.poll() is None, "collector exited"
        try:
            if admin.request("127.0.0.1", STATUS_PORT, "/healthz", netns=n1.netns)[0] == 200:
                break
        except admin.AdminError:
            pass
        assert time.monotonic() < deadline, "collector did not come up"
        time.sleep(0.1)

    # h2c: a real gRPC call, two successes and one NOT_FOUND (5), on one connection.
    res = topo.run(client, [sys.executable, "-c", GRPC_CLIENT, grpc_svc.address, "a", "b", "fail"],
                   timeout=60)
    assert json.loads(res.stdout) == [[0, "pong:a"], [0, "pong:b"], [5, "no such thing"]]
    # TLS passthrough with SNI.
    ctx = ssl.create_default_context(cafile=str(cert))
    raw = admin.connect(tls_svc.vip, tls_svc.port, netns=client.netns, timeout=10)
    with ctx.wrap_socket(raw, server_hostname=SNI) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass
    # Plain TCP.
    sock = admin.connect(tcp_svc.vip, tcp_svc.port, netns=client.netns, timeout=10)
    with sock:
        sock.sendall(b"hello\n")
        got = b""
        while len(got) < 6:
            got += sock.recv(100)

    assert srv.recorder.wait_requests(5, timeout=20) == 5
    time.sleep(1.0)
    assert srv.recorder.requests() == 5  # nothing else was captured
    by_type: dict[str, list[Any]] = {}
    for m, hd in srv.recorder.entries():
        assert m.src_ip == client.ip and m.reporter_node == "n1"
        by_type.setdefault(hd.type, []).append((m, hd))

    grpc_entries = by_type["HTTP/2"]
    per_status: dict[str, int] = {}  # summed: two calls may fall into two report intervals
    for _, hd in grpc_entries:
        per_status[hd.grpc_status] = per_status.get(hd.grpc_status, 0) + hd.count
    assert per_status == {"0": 2, "5": 1}
    for m, hd in grpc_entries:
        assert f"{m.dst_ip}:{m.dst_port}" == grpc_svc.address  # the original destination
        assert (hd.request_method, hd.request_path, hd.response_code) == (
            "POST", "/package.Service/Method", 200)
        assert hd.protocol == "HTTP/2" and hd.duration_us_sum > 0
    ((m, hd),) = by_type["tls"]
    assert f"{m.dst_ip}:{m.dst_port}" == tls_svc.address
    assert hd.tls_sni == SNI and hd.count == 1 and hd.bytes_received > 0 and hd.bytes_sent > 0
    ((m, hd),) = by_type["tcp"]
    assert f"{m.dst_ip}:{m.dst_port}" == tcp_svc.address
    assert (hd.bytes_received, hd.bytes_sent, hd.count) == (6, 6, 1)
    assert hd.request_method == "" and hd.tls_sni == ""
