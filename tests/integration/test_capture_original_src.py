"""The client's source IP survives the proxy (Envoy `original_src` + connmark + policy route).

Each backend pod runs a NetworkPolicy in miniature (an nft rule in its own namespace that
resets every connection to its port not coming from the real client pod). With capture on,
every request still succeeds, same node and across nodes, to the ClusterIP and straight to the
pod, and to host-network endpoints, over HTTP/1.1, h2c (gRPC), TLS and plain TCP; the backend itself reports the client pod as
its peer; Envoy logs the client as both downstream peer and upstream source; the backend's
node (which captures the same Services for its own pods) logs nothing; and with the capture
removed (fail open) the same holds.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import pytest
from capture_support import GRPC_CLIENT, http_get, protocol_pods, read_log, topology, wait_log

from l7scope.netlab import Node, Pod
from l7scope.netlab.sh import run
from l7scope.proxy import admin

pytestmark = [pytest.mark.netns, pytest.mark.envoy]


def only_from(pod: Pod | Node, port: int, client: Pod) -> None:
    """A NetworkPolicy in miniature: `pod` (or a node, for a host-network server) accepts
    `port` from `client`'s IP only."""
    run(["nft", "-f", "-"], pod.netns, stdin=(
        "table inet minipolicy {\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f"    tcp dport {port} ip saddr != {client.ip} counter reject with tcp reset\n"
        "  }\n"
        "}\n"))


def test_http_keeps_the_client_ip_same_node_and_cross_node(request: pytest.FixtureRequest) -> None:
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client, stranger, local = t.add_pod(n1, "client"), t.add_pod(n1, "stranger"), t.add_pod(n1, "local")
    web = t.add_pod(n2, "web")
    for pod in (local, web):
        t.start_server(pod, "http", 8080)
        only_from(pod, 8080, client)
    remote_svc = t.add_service("web", 80, [(web, 8080)])
    local_svc = t.add_service("local", 80, [(local, 8080)])
    # host-network endpoints (the node's own address), on the client's node and the other
    for node in (n1, n2):
        server = t.popen(node, t.python("l7scope.netlab.podserver", "http", "--port", "8090"),
                         stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().startswith(b"READY")
        only_from(node, 8090, client)
    host_local = t.add_service("host-local", 80, [(n1.underlay_ip, 8090)])
    host_remote = t.add_service("host-remote", 80, [(n2.underlay_ip, 8090)])
    services = [remote_svc, local_svc, host_local, host_remote]
    targets = [remote_svc.address, f"{web.ip}:8080", local_svc.address, f"{local.ip}:8080",
               host_local.address, host_remote.address]

    # The policy works: a stranger pod and the node itself are refused.
    assert http_get(t, stranger, remote_svc.address, "/")[0] == 7
    assert run(["curl", "-s", "-m", "3", f"http://{web.ip}:8080/"], n1.netns,
               check=False).returncode == 7

    # Both nodes capture both Services, for their own pods.
    for node in (n1, n2):
        t.capture(node, services)
    e1, e2 = t.start_envoy(n1), t.start_envoy(n2)
    for i, addr in enumerate(targets):
        code, headers = http_get(t, client, addr, f"/captured-{i}")
        assert (code, headers.get(":status")) == (0, "200"), (addr, headers)
        assert headers["x-seen-peer"].startswith(f"{client.ip}:"), (addr, headers)
        assert "x-envoy-upstream-service-time" in headers  # it went through Envoy
    lines = wait_log(e1.settings.access_log_path, len(targets))
    assert [ln["request_path"] for ln in lines] == [f"/captured-{i}" for i in range(len(targets))]
    for ln in lines:
        assert ln["downstream_remote_address"].startswith(f"{client.ip}:")
        assert ln["upstream_local_address"].startswith(f"{client.ip}:")
    assert read_log(e2.settings.access_log_path) == []  # proxied once, on the client's node

    # A pod calling its own Service (kube-proxy masquerades hairpin traffic, with or without
    # l7scope, so the pod sees the node's address either way): answered through Envoy.
    t.start_server(client, "http", 8080)
    self_svc = t.add_service("self", 81, [(client, 8080)])
    t.capture(n1, [*services, self_svc])
    code, headers = http_get(t, client, self_svc.address, "/hairpin")
    assert (code, headers.get(":status")) == (0, "200") and "x-envoy-upstream-service-time" in headers
    lines = wait_log(e1.settings.access_log_path, len(targets) + 1)
    assert lines[-1]["request_path"] == "/hairpin"
    assert lines[-1]["upstream_local_address"].startswith(f"{client.ip}:")
    t.capture(n1, services)

    # Fail open: no rules on the client's node, same answers, nothing logged.
    t.uncapture(n1)
    for addr in targets:
        code, headers = http_get(t, client, addr, "/fail-open")
        assert (code, headers.get(":status")) == (0, "200")
        assert headers["x-seen-peer"].startswith(f"{client.ip}:")
        assert "x-envoy-upstream-service-time" not in headers
    assert len(read_log(e1.settings.access_log_path)) == len(targets) + 1


def test_h2c_tls_and_tcp_keep_the_client_ip(request: pytest.FixtureRequest) -> None:
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    sni = "shop.example"
    p = protocol_pods(t, n1, n2, sni)  # grpc and tcp on n2, tls on n1
    for svc, port in ((p.grpc, 50051), (p.tls, 8443), (p.tcp, 9000)):
        server = next(pod for pod in t.pods.values() if pod.ip == svc.endpoints[0][0])
        assert svc.endpoints[0][1] == port
        only_from(server, port, p.client)
    t.capture(n1, [p.grpc, p.tls, p.tcp])
    envoy = t.start_envoy(n1)

    res = t.run(p.client, [sys.executable, "-c", GRPC_CLIENT, p.grpc.address, "a", "fail"],
                timeout=60)
    assert json.loads(res.stdout) == [[0, "pong:a"], [5, "no such thing"]]

    ctx = ssl.create_default_context(cafile=str(p.cert))
    raw = admin.connect(p.tls.vip, p.tls.port, netns=p.client.netns, timeout=10)
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert f"x-seen-peer: {p.client.ip}:".encode() in answer.lower()

    with admin.connect(p.tcp.vip, p.tcp.port, netns=p.client.netns, timeout=10) as sock:
        sock.sendall(b"hello\n")
        got = b""
        while len(got) < 6:
            chunk = sock.recv(100)
            assert chunk, "echo server closed early"
            got += chunk
    assert got == b"hello\n"

    lines = wait_log(envoy.settings.access_log_path, 4)
    assert sorted(ln["type"] for ln in lines) == ["HTTP/2", "HTTP/2", "tcp", "tls"]
    for ln in lines:
        assert ln["downstream_remote_address"].startswith(f"{p.client.ip}:")
        assert ln["upstream_local_address"].startswith(f"{p.client.ip}:"), ln
