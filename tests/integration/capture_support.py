"""Helpers shared by the capture integration tests (tests/integration/test_capture_*.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from l7scope.contracts.auth import read_token
from l7scope.netlab import External, Node, Pod, Service, Topology, cleanup_stale


def read_log(path: str | Path) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def http_get(t: Topology, who: Pod | External, addr: str, path: str) -> tuple[int, dict[str, str]]:
    """(curl exit code, response headers with `:status`) of GET http://addr/path from a pod or
    an external host."""
    res = t.run(who, ["curl", "-s", "--noproxy", "*", "-m", "5", "-D-", "-o/dev/null",
                      f"http://{addr}{path}"], check=False)
    lines = [ln.rstrip("\r") for ln in res.stdout.splitlines()]
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if lines:
        headers[":status"] = lines[0].split()[1]
    return res.returncode, headers


def client_and_web(t: Topology) -> tuple[Node, Pod, Service]:
    """Node n1 with a client pod, node n2 with a `web` HTTP pod on 8080 behind Service web:80."""
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client = t.add_pod(n1, "client")
    web_pod = t.add_pod(n2, "web")
    t.start_server(web_pod, "http", 8080)
    return n1, client, t.add_service("web", 80, [(web_pod, 8080)])


def server_post(t: Topology, node: Node, port: int, path: str, body: dict[str, Any],
                token_file: Path) -> dict[str, Any]:
    """POST a JSON body to `l7scope server` on 127.0.0.1:port inside `node` (curl, with the
    token file's bearer token); {} when the answer is not JSON (the server is not up yet)."""
    out = t.run(node, ["curl", "-s", "--noproxy", "*", "-m", "5", "-X", "POST", "-H",
                       "content-type: application/json", "-H",
                       f"Authorization: Bearer {read_token(token_file)}", "-d", json.dumps(body),
                       f"http://127.0.0.1:{port}{path}"], check=False)
    try:
        result: dict[str, Any] = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {}
    return result


def wait_log(path: str | Path, n: int, timeout: float = 15.0, settle: float = 0.6
             ) -> list[dict[str, Any]]:
    """Wait until the log holds at least `n` lines, then a little longer to catch extras."""
    deadline = time.monotonic() + timeout
    lines = read_log(path)
    while len(lines) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = read_log(path)
    time.sleep(settle)
    return read_log(path)


def topology(request: pytest.FixtureRequest, family: str = "ipv4") -> Topology:
    """A fresh topology (`family` ipv4, ipv6 or dual) that is torn down when the test (or
    module) ends, pass or fail."""
    if os.geteuid() != 0 or not (shutil.which("nft") and shutil.which("ip")):
        pytest.skip("needs root, nftables and iproute2")
    cleanup_stale()  # namespaces of crashed earlier runs (default prefixes, dead pids)
    topo = Topology(family=family)
    request.addfinalizer(topo.close)
    return topo


def self_signed_cert(workdir: Path, name: str) -> tuple[Path, Path]:
    """A throwaway EC certificate for `name` (CN and SAN): (cert.pem, key.pem) in workdir."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@dataclass
class ProtocolPods:
    """A client pod and the non-HTTP/1 servers of `protocol_pods`, each behind a Service."""

    client: Pod
    grpc: Service
    tls: Service
    tcp: Service
    tcp_pod: Pod
    cert: Path  # the TLS server's certificate, for the client to verify


def protocol_pods(topo: Topology, n1: Node, n2: Node, sni: str) -> ProtocolPods:
    """A client pod on n1; a gRPC server (h2c, n2, :50051), a TLS server (n1, :8443, a
    certificate for `sni`) and a TCP echo server (n2, :9000), started and behind the Services
    grpc:50051, tls:443 and tcp:9000."""
    client = topo.add_pod(n1, "client")
    grpc_pod, tls_pod, tcp_pod = (topo.add_pod(n2, "grpc"), topo.add_pod(n1, "tls"),
                                  topo.add_pod(n2, "tcp"))
    cert, key = self_signed_cert(topo.workdir, sni)
    topo.start_server(grpc_pod, "grpc", 50051)
    topo.start_server(tls_pod, "https", 8443, "--cert", str(cert), "--key", str(key))
    topo.start_server(tcp_pod, "echo", 9000)
    return ProtocolPods(client, topo.add_service("grpc", 50051, [(grpc_pod, 50051)]),
                        topo.add_service("tls", 443, [(tls_pod, 8443)]),
                        topo.add_service("tcp", 9000, [(tcp_pod, 9000)]), tcp_pod, cert)


# A grpcio client run inside a pod: argv[1] = target, argv[2:] = payloads; prints
# [[grpc status code, reply or details], ...] as JSON. Path /package.Service/Method.
GRPC_CLIENT = """
import json, sys, grpc
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
call = ch.unary_unary("/package.Service/Method")
out = []
for payload in sys.argv[2:]:
    try:
        out.append([0, call(payload.encode(), timeout=10).decode()])
    except grpc.RpcError as e:
        out.append([e.code().value[0], e.details()])
print(json.dumps(out))
"""
