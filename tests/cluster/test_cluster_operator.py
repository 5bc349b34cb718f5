"""The operator's workload on the real node, from the install manifest (the chart rendered with
the locally built image): the workshop's ApplicationLayer -> the `l7-log-collector` DaemonSet pod
with real Envoy, collector and node agent containers all ready, and the server pod.

The operator runs here as a host process under the manifest's service account (token via
TokenRequest), so the DaemonSet tests do not depend on its pod; test_operator_pod_runs runs the
manifest's operator Deployment itself as a real pod.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clusterharness
import pytest
import yaml
from clusterharness import Cluster, Pods, wait_for

from l7scope.kube.client import Kube, KubeError
from l7scope.operator import chart
from l7scope.operator.render import ENVOY_ADMIN
from l7scope.testing.workshop import AL_PATH, WORKSHOP_AL

from .test_cluster_workloads import CLIENT, WEB

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NS = "l7scope-system"


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


@pytest.fixture(scope="module")
def manifest(cluster: Cluster, kube: Kube) -> Iterator[list[dict[str, Any]]]:
    """The chart's objects with the local image, all applied but the operator's Deployment."""
    repo, tag = cluster.image("l7scope").rsplit(":", 1)
    docs = chart.render(values={"image": {"repository": repo, "tag": tag}})
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for d in docs:
        if d["kind"] in ("Namespace", "CustomResourceDefinition"):
            kube.apply(d, field_manager="l7scope-test")

    def established() -> bool:
        for d in crds:
            got = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                           f"{d['metadata']['name']}")
            if not any(c["type"] == "Established" and c["status"] == "True"
                       for c in (got.get("status") or {}).get("conditions") or []):
                return False
        return True
    wait_for(established, 30, "the CRDs to be established")
    k = cluster.kube()  # a fresh client: discovery must see the new resources
    try:
        for d in docs:
            if d["kind"] not in ("Namespace", "CustomResourceDefinition", "Deployment"):
                k.apply(d, field_manager="l7scope-test")
    finally:
        k.close()
    yield docs
    kube.delete(f"/api/v1/namespaces/{NS}")


@pytest.fixture(scope="module")
def operator(cluster: Cluster, kube: Kube, manifest: list[dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """`l7scope operator` as a host process with the manifest's service account's token."""
    tmp = tmp_path_factory.mktemp("operator")
    kc = clusterharness.service_account_kubeconfig(cluster, kube, NS, "l7scope-operator",
                                                   tmp / "operator.kubeconfig")
    log = tmp / "operator.log"
    exe = REPO / ".venv" / "bin" / "l7scope"
    with log.open("wb") as out:
        op = subprocess.Popen([str(exe), "--log-level", "info", "operator", "--kubeconfig", str(kc),
                               "--namespace", NS, "--image", cluster.image("l7scope"),
                               "--image-pull-policy", "IfNotPresent"],
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    op.log_path = log  # type: ignore[attr-defined]
    yield op
    op.terminate()
    try:
        op.wait(15)
    except subprocess.TimeoutExpired:
        op.kill()
        op.wait(5)


def _collector_pods(pods: Pods) -> list[dict[str, Any]]:
    return [p for p in pods.list() if p["metadata"]["name"].startswith("l7-log-collector-")]


def test_workshop_daemonset_runs_on_the_real_node(cluster: Cluster, kube: Kube,
                                                   operator: subprocess.Popen[bytes]) -> None:
    pods = Pods(kube, NS)
    t0 = time.monotonic()
    kube.apply(yaml.safe_load(WORKSHOP_AL), field_manager="l7scope-test")

    def collector_ready() -> dict[str, Any] | None:
        assert operator.poll() is None, operator.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        ps = _collector_pods(pods)
        return ps[0] if ps and _ready(ps[0]) else None
    pod = wait_for(collector_ready, 120, "the l7-log-collector pod Ready", diagnose=pods.describe)
    ready_after = time.monotonic() - t0
    # One pod on the node, hostNetwork (the node's IP), three real containers, all running.
    assert pod["spec"]["nodeName"] == clusterharness.NODE
    assert pod["status"]["podIP"] == clusterharness.NODE_IP
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert sorted(statuses) == ["envoy-proxy", "l7-collector", "l7-node-agent"], statuses
    for name, cs in statuses.items():
        assert cs["ready"] and "running" in cs["state"], (name, cs)
        assert cs["containerID"].startswith("containerd://")
    # The collector tails Envoy's log and talks to the node agent over its socket.
    collector_log = pods.logs(pod["metadata"]["name"], container="l7-collector")
    assert "collector: log /tmp/envoy.log -> unix://" in collector_log, collector_log
    # The server pod, and the ApplicationLayer's status as the operator saw it.
    server = wait_for(lambda: [p for p in pods.list() if
                               p["metadata"]["name"].startswith("l7scope-server-") and _ready(p)],
                      60, "the l7scope-server pod Ready", diagnose=pods.describe)
    assert server[0]["status"]["podIP"].startswith("10.244.0.")
    status = wait_for(lambda: (kube.get(AL_PATH).get("status") or {}).get("state") == "Ready"
                      and kube.get(AL_PATH)["status"], 30, "ApplicationLayer Ready")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["message"] == "DaemonSet l7-log-collector: 1/1 pods available"
    print(f"\nl7-log-collector Ready {ready_after:.1f}s after the ApplicationLayer: "
          + pods.describe().splitlines()[0])


def test_annotated_service_is_captured_through_kube_proxy(cluster: Cluster, kube: Kube,
                                                          operator: subprocess.Popen[bytes],
                                                          namespace: str, pods: Pods) -> None:
    """The workshop's step 4 on the real node: annotate a Service; its clients still reach it
    through kube-proxy, and Envoy (TPROXY, in the node's netns) sees every request."""
    image = cluster.image("l7scope")
    spec = {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never"}]}
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "shop", "namespace": namespace},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}},
                          "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {
                              **spec, "containers": [{**spec["containers"][0],
                                                      "command": ["python3", "-c", WEB]}]}}}})
    svc = kube.create({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "shop", "namespace": namespace},
                       "spec": {"selector": {"app": "shop"}, "type": "NodePort",
                                "ports": [{"port": 80, "targetPort": 8080}]}})
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "buyer", "namespace": namespace},
                 "spec": {**spec, "containers": [{**spec["containers"][0],
                                                  "command": ["sleep", "infinity"]}]}})
    cip = svc["spec"]["clusterIP"]
    pods.wait_ready("buyer")
    wait_for(lambda: [p for p in pods.list(app="shop") if _ready(p)], 90, "the shop pod Ready",
             diagnose=pods.describe)
    url = f"http://{cip}"
    # Not annotated yet: kube-proxy alone.
    wait_for(lambda: pods.exec("buyer", ["python3", "-c", CLIENT, url, "1"])[0] == 0, 30,
             "the shop through kube-proxy")
    kube.merge_patch(f"/api/v1/namespaces/{namespace}/services/shop",
                     {"metadata": {"annotations": {"projectcalico.org/l7-logging": "true"}}})
    collector = Pods(kube, NS)
    (agent,) = _collector_pods(collector)

    def agent_logs() -> str:
        name = agent["metadata"]["name"]
        return "\n".join(f"--- {c}:\n" + "\n".join(collector.logs(name, c).splitlines()[-15:])
                         for c in ("l7-node-agent", "envoy-proxy"))

    wait_for(lambda: cip in clusterharness.in_netns("nft", "list", "table", "inet", "l7scope",
                                                    check=False).stdout,
             30, "the ClusterIP in the node agent's capture set", diagnose=agent_logs)
    before = _envoy_requests(collector, agent["metadata"]["name"])
    rc, out, err = pods.exec("buyer", ["python3", "-c", CLIENT, url, "5"])
    assert rc == 0, f"the annotated Service no longer answers: {err.strip().splitlines()[-1:]}"
    assert [a[0] for a in json.loads(out)] == [200] * 5
    # Every request went through the node's Envoy (TPROXY), which forwarded it to the ClusterIP
    # again, balanced by kube-proxy: the shop pod served all 5.
    assert _envoy_requests(collector, agent["metadata"]["name"]) - before == 5
    (shop,) = pods.list(app="shop")
    served = [ln for ln in pods.logs(shop["metadata"]["name"]).splitlines()
              if ln.startswith("served /req-")]
    assert len(served) == 6, served  # the one before the annotation, and these 5
    # ... each from the buyer's own address: Envoy keeps the client's source IP upstream.
    buyer_ip = pods.get("buyer")["status"]["podIP"]
    assert all(ln.endswith(f" to {buyer_ip}") for ln in served), served

    # Its NodePort, from outside the cluster network (the host, HOST_IP), through the real
    # kube-proxy: captured on the node (Envoy's NodePort listener), answered by the shop.
    node_port = svc["spec"]["ports"][0]["nodePort"]
    wait_for(lambda: f"{node_port}" in clusterharness.in_netns(
        "nft", "list", "set", "inet", "l7scope", "nodeports", check=False).stdout,
        30, "the NodePort in the node agent's capture set")
    before = _envoy_requests(collector, agent["metadata"]["name"])
    for i in range(3):
        url_np = f"http://{clusterharness.NODE_IP}:{node_port}/np-{i}"
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(url_np, timeout=10) as r:
            assert r.status == 200
    assert _envoy_requests(collector, agent["metadata"]["name"]) - before == 3
    served_np = [ln for ln in pods.logs(shop["metadata"]["name"]).splitlines()
                 if ln.startswith("served /np-")]
    assert len(served_np) == 3, served_np


ADMIN_GET = """
import sys
from l7scope.proxy.admin import request_at
status, body = request_at(sys.argv[1], sys.argv[2], timeout=5)
assert status == 200, status
print(body.decode() if isinstance(body, bytes) else body)
"""


def _envoy_requests(collector: Pods, pod: str) -> int:
    """HTTP requests Envoy's capture listeners completed (its admin /stats, on the unix socket
    in the pod, through the image's own admin client)."""
    rc, out, err = collector.exec(pod, ["python", "-c", ADMIN_GET, ENVOY_ADMIN,
                                        "/stats?filter=downstream_rq_completed"],
                                  container="envoy-proxy")
    assert rc == 0, err
    total = 0
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("http.") and not name.startswith("http.admin.") \
                and name.endswith(".downstream_rq_completed"):
            total += int(value)
    return total


def test_deleting_the_application_layer_removes_the_daemonset(
        kube: Kube, operator: subprocess.Popen[bytes]) -> None:
    pods = Pods(kube, NS)
    assert _collector_pods(pods), "the workshop test left no collector pod to remove"
    kube.delete(AL_PATH)
    wait_for(lambda: not _collector_pods(pods), 90, "the l7-log-collector pod to go",
             diagnose=pods.describe)
    with pytest.raises(KubeError) as e:
        kube.get(f"/apis/apps/v1/namespaces/{NS}/daemonsets/l7-log-collector")
    assert e.value.status == 404


def test_operator_pod_runs(cluster: Cluster, kube: Kube, manifest: list[dict[str, Any]]) -> None:
    """The install manifest's operator Deployment as a real pod: it stays up (no restart) and
    ready for 20 s."""
    (deployment,) = [d for d in manifest if d["kind"] == "Deployment"]
    kube.apply(deployment, field_manager="l7scope-test")
    pods = Pods(kube, NS)
    sel = {"app.kubernetes.io/name": "l7scope-operator"}
    try:
        wait_for(lambda: [p for p in pods.list(**sel) if p.get("status", {}).get("containerStatuses")],
                 60, "the operator pod's container", diagnose=pods.describe)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (pod,) = pods.list(**sel)
            (cs,) = pod["status"]["containerStatuses"]
            if cs["restartCount"] > 0 or "terminated" in cs.get("lastState", {}):
                name = pod["metadata"]["name"]
                previous = pods.core.read_namespaced_pod_log(name, NS, previous=True)
                pytest.fail("the operator container restarted; its last lines:\n"
                            + "\n".join(previous.splitlines()[-4:]))
            time.sleep(1)
        assert _ready(pod) and cs["ready"], pods.describe()
    finally:
        kube.delete(f"/apis/apps/v1/namespaces/{NS}/deployments/l7scope-operator")
