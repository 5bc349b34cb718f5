"""Capture of the non-HTTP/1 chains through real TPROXY + Envoy: h2c with a real gRPC call,
TLS passthrough (SNI logged, type tls), plain TCP (type tcp), and log reopening; and what an
HTTP/1.1 request looks like to the server with and without the proxy (it must not change).

One topology for the module: two nodes; a client pod on n1 (where Envoy runs and the capture
rules live); gRPC, TLS and TCP servers on both nodes, each behind a Service VIP.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from capture_support import GRPC_CLIENT, protocol_pods, read_log, topology, wait_log

from l7scope.netlab import Pod, Service, Topology
from l7scope.proxy import admin
from l7scope.proxy.supervisor import EnvoySupervisor

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

SNI = "shop.example"


@dataclass
class Lab:
    topo: Topology
    client: Pod
    envoy: EnvoySupervisor
    grpc: Service
    tls: Service
    tcp: Service
    tcp_pod: Pod
    cert: Path
    web: Service
    web_pod: Pod

    @property
    def log_path(self) -> Path:
        return Path(self.envoy.settings.access_log_path)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Lab:
    topo = topology(request)
    n1, n2 = topo.add_node("n1"), topo.add_node("n2")
    pods = protocol_pods(topo, n1, n2, SNI)
    web_pod = topo.add_pod(n2, "web")
    topo.start_server(web_pod, "http", 8080)
    web = topo.add_service("web", 80, [(web_pod, 8080)])
    topo.capture(n1, [pods.grpc, pods.tls, pods.tcp, web])
    envoy = topo.start_envoy(n1)
    return Lab(topo, pods.client, envoy, pods.grpc, pods.tls, pods.tcp, pods.tcp_pod, pods.cert,
               web, web_pod)


def _new_lines(lab: Lab, action: Callable[[], Any], n: int) -> tuple[Any, list[dict[str, Any]]]:
    before = len(read_log(lab.log_path))
    result = action()
    lines = wait_log(lab.log_path, before + n)[before:]
    return result, lines


def test_h2c_grpc_call_is_logged_with_path_and_grpc_status(lab: Lab) -> None:
    payloads = ["a", "bbbb", "fail"]

    def call() -> Any:
        res = lab.topo.run(lab.client, [sys.executable, "-c", GRPC_CLIENT, lab.grpc.address,
                                        *payloads], timeout=60)
        return json.loads(res.stdout)

    answers, lines = _new_lines(lab, call, len(payloads))
    # The client saw the real server's answers through the proxy, including the error status.
    assert answers == [[0, "pong:a"], [0, "pong:bbbb"], [5, "no such thing"]]
    assert len(lines) == 3
    for line, payload in zip(lines, payloads, strict=True):
        assert line["type"] == "HTTP/2" and line["protocol"] == "HTTP/2"
        assert line["request_method"] == "POST"
        assert line["request_path"] == "/package.Service/Method"
        assert line["response_code"] == 200
        assert line["downstream_local_address"] == lab.grpc.address
        assert line["downstream_remote_address"].startswith(f"{lab.client.ip}:")
        assert line["domain"] == lab.grpc.address
        assert line["bytes_received"] == 5 + len(payload)  # gRPC frame header + message
    assert [line["grpc_status"] for line in lines] == [0, 0, 5]
    assert [line["bytes_sent"] for line in lines[:2]] == [5 + len("pong:a"), 5 + len("pong:bbbb")]


def test_tls_is_passed_through_and_logged_with_sni(lab: Lab) -> None:
    request = f"GET /secret HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n".encode()

    def call() -> bytes:
        ctx = ssl.create_default_context(cafile=str(lab.cert))
        raw = admin.connect(lab.tls.vip, lab.tls.port, netns=lab.client.netns, timeout=10)
        # Verifying the server's own certificate for the SNI proves Envoy did not terminate TLS.
        with ctx.wrap_socket(raw, server_hostname=SNI) as s:
            s.sendall(request)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    answer, lines = _new_lines(lab, call, 1)
    assert answer.startswith(b"HTTP/1.1 200 ")
    (line,) = lines
    assert line["type"] == "tls"
    assert line["requested_server_name"] == SNI
    assert line["downstream_local_address"] == lab.tls.address
    assert line["downstream_remote_address"].startswith(f"{lab.client.ip}:")
    assert line["request_method"] is None and line["request_path"] is None
    # Encrypted bytes: more than the plaintext each way (handshake + records).
    assert line["bytes_received"] > len(request) and line["bytes_sent"] > len(answer)


def _echo(lab: Lab, host: str, port: int, messages: list[bytes]) -> bytes:
    sock = admin.connect(host, port, netns=lab.client.netns, timeout=10)
    got = b""
    with sock:
        for m in messages:
            sock.sendall(m)
            want = len(got) + len(m)
            while len(got) < want:
                chunk = sock.recv(65536)
                assert chunk, "echo server closed early"
                got += chunk
    return got


def test_plain_tcp_to_vip_and_to_endpoint_is_logged_as_tcp(lab: Lab) -> None:
    messages = [f"hello {i}\n".encode() * (i + 1) for i in range(10)]
    total = sum(map(len, messages))
    got, lines = _new_lines(lab, lambda: _echo(lab, lab.tcp.vip, lab.tcp.port, messages), 1)
    assert got == b"".join(messages)
    (line,) = lines
    assert line["type"] == "tcp"
    assert line["downstream_local_address"] == lab.tcp.address
    assert line["downstream_remote_address"].startswith(f"{lab.client.ip}:")
    assert (line["bytes_received"], line["bytes_sent"]) == (total, total)
    assert line["request_method"] is None and line["requested_server_name"] is None

    # A Service's endpoint is selected too: a connection straight to the pod is captured.
    direct = [b"direct\n"]
    _, lines = _new_lines(lab, lambda: _echo(lab, lab.tcp_pod.ip, 9000, direct), 1)
    (line,) = lines
    assert line["type"] == "tcp" and line["downstream_local_address"] == f"{lab.tcp_pod.ip}:9000"
    assert line["bytes_received"] == len(direct[0])


def test_envoy_reopens_its_log_after_rotation(lab: Lab) -> None:
    rotated = lab.log_path.with_suffix(".log.1")
    lab.log_path.rename(rotated)
    try:
        lab.envoy.reopen_logs()
        msg = [b"after rotation\n"]
        _echo(lab, lab.tcp.vip, lab.tcp.port, msg)
        lines = wait_log(lab.log_path, 1)
        assert len(lines) == 1 and lines[0]["bytes_received"] == len(msg[0])
        assert all(ln["bytes_received"] != len(msg[0]) or ln["type"] != "tcp"
                   for ln in read_log(rotated))
    finally:
        # Put the history back in place so other tests in this module can count lines.
        old = rotated.read_bytes()
        new = lab.log_path.read_bytes() if lab.log_path.exists() else b""
        rotated.unlink()
        lab.log_path.write_bytes(old + new)
        lab.envoy.reopen_logs()


def _headers(lab: Lab, url: str) -> dict[str, str]:
    out = lab.topo.run(lab.client, ["curl", "-s", "--noproxy", "*", "-D-", "-o/dev/null",
                                    "-H", "X-Mixed-Case: 1", "-H", "x-request-id: req-42", url])
    lines = [ln.rstrip("\r") for ln in out.stdout.splitlines()]
    assert lines[0] == "HTTP/1.1 200 OK", out.stdout
    return {k.strip().lower(): v.strip()
            for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}


def test_http1_requests_reach_the_server_unchanged(lab: Lab) -> None:
    # Without capture rules the same request goes straight to the same server.
    lab.topo.uncapture(lab.client.node)
    try:
        direct = _headers(lab, f"http://{lab.web.vip}/")
    finally:
        lab.topo.capture(lab.client.node, [lab.grpc, lab.tls, lab.tcp, lab.web])
    proxied, lines = _new_lines(lab, lambda: _headers(lab, f"http://{lab.web.vip}/"), 1)
    assert lines[0]["downstream_local_address"] == lab.web.address  # it was proxied
    assert lines[0]["request_id"] == "req-42"  # the client's request id is kept
    assert "x-envoy-upstream-service-time" not in direct  # (that one was not proxied)
    # Same Host, same header names in the same case and order; Envoy only appends
    # x-forwarded-proto (and x-request-id when the client sent none).
    assert proxied["x-seen-host"] == direct["x-seen-host"] == lab.web.vip
    seen_direct = direct["x-seen-headers"].split(",")
    seen_proxied = proxied["x-seen-headers"].split(",")
    assert "X-Mixed-Case" in seen_direct
    assert seen_proxied == [*seen_direct, "x-forwarded-proto"]
    # The server's own Server header reaches the client (not "envoy").
    assert proxied["server"] == direct["server"] and "envoy" not in proxied["server"]
