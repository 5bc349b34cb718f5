"""Real pods from the project's image: a Deployment behind a ClusterIP Service, reached from a
client pod through the real kube-proxy (DNAT in the node's iptables), with exec, logs, a
readiness probe the kubelet runs, and the in-cluster API through the `kubernetes` Service."""

from __future__ import annotations

import json
import time
from typing import Any

import clusterharness
import pytest
from clusterharness import Cluster, Pods, wait_for

from l7scope.kube.client import Kube

pytestmark = pytest.mark.cluster

WEB = """
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{socket.gethostname()} {self.path}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(f"served {self.path} to {self.client_address[0]}", flush=True)
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"""

CLIENT = """
import json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
out = []
for i in range(n):
    with urllib.request.urlopen(f"{url}/req-{i}", timeout=5) as r:
        out.append([r.status, r.read().decode().strip()])
print(json.dumps(out))
"""

IN_CLUSTER = """
from l7scope.kube.client import connect
k = connect(in_cluster=True)
print(k.credentials().server, k.server_version())
"""


def _pod_spec(image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                            "command": command, **extra}]}


@pytest.fixture(scope="module")
def web(cluster: Cluster, kube: Kube, namespace: str, pods: Pods) -> dict[str, Any]:
    image = cluster.image("l7scope")
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "web", "namespace": namespace},
                 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                          "template": {"metadata": {"labels": {"app": "web"}},
                                       "spec": _pod_spec(image, ["python3", "-c", WEB],
                                                         ports=[{"containerPort": 8080}],
                                                         readinessProbe={
                                                             "httpGet": {"path": "/ready",
                                                                         "port": 8080},
                                                             "periodSeconds": 1})}}})
    svc = kube.create({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "web", "namespace": namespace},
                       "spec": {"selector": {"app": "web"},
                                "ports": [{"port": 80, "targetPort": 8080}]}})
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "client", "namespace": namespace},
                 "spec": _pod_spec(image, ["sleep", "infinity"])})

    def two_ready() -> list[dict[str, Any]] | None:
        ps = [p for p in pods.list(app="web") if not p["metadata"].get("deletionTimestamp")]
        ok = [p for p in ps if any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in p.get("status", {}).get("conditions", []))]
        return ok if len(ok) == 2 else None
    t0 = time.monotonic()
    web_pods = wait_for(two_ready, 120, "2 web pods Ready", diagnose=pods.describe)
    pods.wait_ready("client")
    wait_for(lambda: len(kube.get(f"/api/v1/namespaces/{namespace}/endpoints/web")
                         .get("subsets", [{}])[0].get("addresses", [])) == 2,
             30, "the Service's 2 endpoints")
    # kube-proxy programs the node a moment after the Endpoints change: wait for its two
    # DNAT rules (one KUBE-SEP chain per endpoint) in the node's netns.
    def programmed() -> bool:
        rules = clusterharness.in_netns("iptables-save", "-t", "nat").stdout.splitlines()
        return sum(1 for r in rules if r.startswith("-A KUBE-SEP-") and "-j DNAT" in r
                   and f'"{namespace}/web"' in r) == 2
    wait_for(programmed, 30, "kube-proxy's rules for both endpoints", diagnose=cluster.diagnose)
    return {"service": svc, "pods": web_pods, "seconds": time.monotonic() - t0}


def test_pods_run_with_real_ips_from_the_project_image(cluster: Cluster, web: dict[str, Any],
                                                       pods: Pods) -> None:
    ips = [p["status"]["podIP"] for p in web["pods"]]
    assert len(set(ips)) == 2 and all(ip.startswith("10.244.0.") for ip in ips), ips
    for p in web["pods"]:
        (cs,) = p["status"]["containerStatuses"]
        assert cs["ready"] and "running" in cs["state"]
        assert cs["containerID"].startswith("containerd://")
        assert cs["image"].endswith(cluster.image("l7scope").split("/", 1)[1])
    # The containers are real processes in the node: exec sees the pod's own hostname and IP.
    name = web["pods"][0]["metadata"]["name"]
    rc, out, err = pods.exec(name, ["sh", "-c", "hostname; ip -4 -o addr show eth0"])
    assert rc == 0, err
    assert out.splitlines()[0] == name
    assert f"inet {ips[0]}/" in out


def test_client_reaches_the_service_through_kube_proxy(web: dict[str, Any], pods: Pods) -> None:
    cip = web["service"]["spec"]["clusterIP"]
    assert cip.startswith("10.") and cip not in [p["status"]["podIP"] for p in web["pods"]]
    rc, out, err = pods.exec("client", ["python3", "-c", CLIENT, f"http://{cip}", "20"])
    assert rc == 0, err
    answers = json.loads(out)
    assert [a[0] for a in answers] == [200] * 20
    served_by = {a[1].split()[0] for a in answers}
    names = {p["metadata"]["name"] for p in web["pods"]}
    # kube-proxy's iptables rules balance at random over both endpoints: 20 requests all going
    # to one of two pods has probability 2 * 0.5**20.
    assert served_by == names, answers
    # ... and each web pod's log (read through the API from the kubelet) has what it served.
    client_ip = pods.get("client")["status"]["podIP"]
    total = 0
    for name in names:
        lines = [ln for ln in pods.logs(name).splitlines() if ln.startswith("served /req-")]
        assert all(ln.endswith(f"to {client_ip}") for ln in lines), lines
        total += len(lines)
    assert total == 20


def test_exec_reports_the_exit_code(pods: Pods, web: dict[str, Any]) -> None:
    rc, out, _ = pods.exec("client", ["sh", "-c", "echo hello; exit 3"])
    assert (rc, out) == (3, "hello\n")


def test_in_cluster_api_through_the_kubernetes_service(web: dict[str, Any], pods: Pods) -> None:
    """The project's own client, in-cluster mode, in a pod: service-account token + ca.crt,
    TLS verified, to https://10.96.0.1 (DNATed by kube-proxy to the apiserver)."""
    rc, out, err = pods.exec("client", ["/opt/l7scope/bin/python", "-c", IN_CLUSTER])
    assert rc == 0, err
    server, version = out.split()
    assert server == "https://10.96.0.1:443"
    assert version == "v1.20.2"
