"""The operator's workload on the real node, from the install manifest (the chart rendered with
the locally built image): the workshop's ApplicationLayer -> the `l7-log-collector` DaemonSet pod
with real Envoy, collector and node agent containers all ready, and the server pod.

The operator runs here as a host process under the manifest's service account (token via
TokenRequest), so the DaemonSet tests do not depend on its pod; test_operator_pod_runs runs the
manifest's operator Deployment itself as a real pod.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clusterharness
import pytest
import yaml
from clusterharness import PROBE_LOOP, Cluster, Pods, wait_for

from l7scope.contracts.auth import TOKEN_AUDIENCE
from l7scope.kube.client import Kube, KubeError
from l7scope.operator import chart, logstorage, tls
from l7scope.operator.render import APP_UID, ENVOY_ADMIN, SERVER, SERVER_PORT, SERVICE_ACCOUNT
from l7scope.proxy import admin
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
    pv_dir = _server_volume(kube)
    k = cluster.kube()  # a fresh client: discovery must see the new resources
    try:
        for d in docs:
            if d["kind"] not in ("Namespace", "CustomResourceDefinition", "Deployment"):
                k.apply(d, field_manager="l7scope-test")
    finally:
        k.close()
    yield docs
    kube.delete(f"/api/v1/namespaces/{NS}")
    kube.delete(f"/api/v1/persistentvolumes/{PV}")
    shutil.rmtree(pv_dir, ignore_errors=True)


PV = "l7scope-test-server-data"


def _server_volume(kube: Kube, name: str = PV) -> Path:
    """Static provisioning (the harness has no provisioner): a hostPath PersistentVolume on the
    node, bound in advance to the claim the server's StatefulSet makes (`data-l7scope-server-0`,
    no StorageClass: the cluster has no default one). The directory belongs to the server's uid:
    fsGroup does not reach hostPath volumes."""
    d = Path(tempfile.mkdtemp(prefix="l7scope-pv-", dir="/var/tmp"))
    os.chown(d, APP_UID, APP_UID)
    d.chmod(0o770)
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": str(d), "type": "Directory"},
                         "claimRef": {"namespace": NS, "name": f"data-{SERVER}-0"}}},
               field_manager="l7scope-test")
    return d


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


SERVER_CALL = """
import json, ssl, sys, time, urllib.request
from l7scope.contracts import bulk
from l7scope.contracts.record import L7Record, encode_record
base, token, ca, what = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cadata=ca)  # the operator's CA bundle: the server is https
auth = {"Authorization": "Bearer " + token}
if what == "status":
    req = urllib.request.Request(base + "/api/v1/status", headers=auth)
    print(json.load(urllib.request.urlopen(req, timeout=10, context=ctx))["store"]["records"])
else:  # ship batch ids sys.argv[5:] of 100 records each, as a node agent does
    now = int(time.time())
    body = b"\\n".join(encode_record(L7Record(start_time=now - 1, end_time=now, count=1,
                                              url=f"shop:80/p{i}")) for i in range(100)) + b"\\n"
    out = []
    for bid in sys.argv[5:]:
        req = urllib.request.Request(base + bulk.BULK_PATH, data=body, method="POST", headers={
            **auth, bulk.BATCH_ID_HEADER: bid, "Content-Type": bulk.CONTENT_TYPE})
        out.append(json.load(urllib.request.urlopen(req, timeout=10, context=ctx)))
    print(json.dumps(out))
"""


def _token(kube: Kube, namespace: str, sa: str, audiences: list[str] | None = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 3600, **({"audiences": audiences} if audiences else {})}
    return str(kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                  "spec": spec})["status"]["token"])


def test_server_pod_recreated_keeps_every_record(kube: Kube, operator: subprocess.Popen[bytes],
                                                 namespace: str, pods: Pods) -> None:
    """The embedded store is a StatefulSet on a PersistentVolumeClaim: records shipped with the
    node agents' credential (batches with ids) survive deleting the server pod (a new pod, same
    claim), and so do their batch ids. The harness has no cluster DNS: the server by ClusterIP."""
    reader = "records-reader"  # a cluster-wide reader (get pods everywhere) for /api/v1/status
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": reader, "namespace": namespace}})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": f"{namespace}-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
               field_manager="l7scope-test")
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{namespace}-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": f"{namespace}-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": reader, "namespace": namespace}]},
               field_manager="l7scope-test")
    try:
        read = _token(kube, namespace, reader)
        write = _token(kube, NS, SERVICE_ACCOUNT, [TOKEN_AUDIENCE])
        cip = kube.get(f"/api/v1/namespaces/{NS}/services/{SERVER}")["spec"]["clusterIP"]
        base = f"https://{cip}:{SERVER_PORT}"  # the certificate names the ClusterIP
        server_pods = Pods(kube, NS)
        ca = wait_for(lambda: (kube.get(f"/api/v1/namespaces/{NS}/configmaps/{tls.CA_CONFIGMAP}")
                               .get("data") or {}).get("ca.crt"), 60, "the operator's CA bundle")

        def call(token: str, *args: str) -> str | None:
            rc, out, _ = pods.exec("buyer", ["python3", "-c", SERVER_CALL, base, token, ca, *args])
            return out.strip() if rc == 0 and out.strip() else None

        def records() -> int | None:
            out = call(read, "status")
            return int(out) if out and out.isdigit() else None

        wait_for(lambda: records() is not None, 60, "the server answering",
                 diagnose=server_pods.describe)
        shipped = json.loads(call(write, "ship", "t-b0", "t-b1", "t-b2") or "[]")
        assert [r["accepted"] for r in shipped] == [100, 100, 100], shipped
        before = records()
        assert before is not None and before >= 300
        pvc = kube.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/data-{SERVER}-0")
        assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == PV
        (old,) = [p for p in server_pods.list() if p["metadata"]["name"] == f"{SERVER}-0"]
        kube.delete(f"/api/v1/namespaces/{NS}/pods/{SERVER}-0")
        wait_for(lambda: [p for p in server_pods.list() if p["metadata"]["name"] == f"{SERVER}-0"
                          and p["metadata"]["uid"] != old["metadata"]["uid"] and _ready(p)],
                 120, "a new server pod Ready", diagnose=server_pods.describe)
        after = wait_for(records, 60, "the new server pod answering")
        print(f"\nserver records before/after the pod was recreated: {before}/{after}")
        assert after == before
        # the batch ids survived too: a node agent's retry of t-b1 is a duplicate, not new rows
        again = json.loads(call(write, "ship", "t-b1") or "[]")
        assert again and again[0]["duplicate"] is True, again
        assert records() == before
    finally:
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{namespace}-reader")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{namespace}-reader")


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
    rc, out, err = collector.exec(pod, ["python", "-c", ADMIN_GET, ENVOY_ADMIN, admin.COMPLETED_FILTER],
                                  container="envoy-proxy")
    assert rc == 0, err
    return admin.completed_requests(out)


#: Run in the node agent's container (host network, its projected token, the mounted CA
#: bundle): a bulk POST to the server over https verified with the operator's CA, then a search
#: as an admin; the same POST over plain http and with the system's CAs must fail.
TLS_PROBE = """
import json, ssl, sys, uuid
import httpx
url, ca, token_file, admin, body = sys.argv[1:6]
token = open(token_file).read().strip()
ctx = ssl.create_default_context(cafile=ca)
bulk = {"Authorization": "Bearer " + token, "Content-Type": "application/x-ndjson",
        "X-L7scope-Batch-Id": uuid.uuid4().hex}
out = {}
for name, target, verify in (("plain_http", url.replace("https://", "http://"), ctx),
                             ("system_cas", url, True), ("operator_ca", url, ctx)):
    try:
        r = httpx.post(target + "/api/v1/l7/logs/bulk", content=body.encode(), headers=bulk,
                       verify=verify, timeout=10)
        out[name] = {"status": r.status_code, "answer": r.json()}
    except Exception as e:
        out[name] = {"error": type(e).__name__ + ": " + str(e)[:200]}
r = httpx.post(url + "/api/v1/l7/logs/search", json={"selector": 'host = "tls-probe"', "page_size": 100},
               headers={"Authorization": "Bearer " + admin, "Content-Type": "application/json"},
               verify=ctx, timeout=10)
out["search"] = {"status": r.status_code, "hits": r.json().get("total_hits") if r.status_code == 200 else r.text[:300]}
print(json.dumps(out))
"""


def test_server_tls_from_the_node_agent_pod_with_the_operators_ca(
        cluster: Cluster, kube: Kube, operator: subprocess.Popen[bytes]) -> None:
    """The operator's CA and certificate on real pods: the server pod serves HTTPS (its HTTPS
    probes keep it Ready), the node agent runs with `--server https://l7scope-server.<ns>.svc`
    and `--server-ca-file` from the operator's ConfigMap; from that container, with the agent's
    own projected token, records POSTed over TLS verified with that CA are stored, and plain
    http and the system's CAs are refused."""
    import msgspec
    from cryptography import x509

    from l7scope.contracts.record import encode_records
    from l7scope.testing import record_gen

    svc = kube.get(f"/api/v1/namespaces/{NS}/services/{SERVER}")
    cip = svc["spec"]["clusterIP"]

    def cert_names_cip() -> bool:
        pair = tls.pair_from_secret(kube.get(f"/api/v1/namespaces/{NS}/secrets/{tls.SERVER_SECRET}"))
        assert pair is not None
        san = x509.load_pem_x509_certificate(pair.cert_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        return cip in [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    wait_for(cert_names_cip, 30, "the server certificate naming the ClusterIP")
    bundle = kube.get(f"/api/v1/namespaces/{NS}/configmaps/{tls.CA_CONFIGMAP}")["data"]["ca.crt"]
    assert "PRIVATE KEY" not in bundle
    # No cluster DNS here (docs/cluster-tests.md): the agent resolves the Service's names via
    # hostAliases, added to the DaemonSet by the test (a field the operator does not own).
    ds_path = f"/apis/apps/v1/namespaces/{NS}/daemonsets/l7-log-collector"
    kube.merge_patch(ds_path, {"spec": {"template": {"spec": {"hostAliases": [
        {"ip": cip, "hostnames": [f"{SERVER}.{NS}.svc", f"{SERVER}.{NS}"]}]}}}})
    collector = Pods(kube, NS)

    def rolled() -> dict[str, Any] | None:
        ps = [p for p in _collector_pods(collector) if p["spec"].get("hostAliases")
              and not p["metadata"].get("deletionTimestamp")]
        return ps[0] if ps and _ready(ps[0]) else None
    agent = wait_for(rolled, 120, "the node agent pod with hostAliases Ready", diagnose=collector.describe)
    name = agent["metadata"]["name"]
    spec = {c["name"]: c for c in agent["spec"]["containers"]}
    cmd = spec["l7-node-agent"]["command"]
    url = f"https://{SERVER}.{NS}.svc:8686"
    assert cmd[cmd.index("--server") + 1] == url
    ca_file = cmd[cmd.index("--server-ca-file") + 1]
    token_file = cmd[cmd.index("--server-token-file") + 1]
    rc, out, err = collector.exec(name, ["cat", ca_file], container="l7-node-agent")
    assert rc == 0 and out == bundle, err
    now = int(time.time())
    recs = [msgspec.structs.replace(r, host="tls-probe") for r in
            record_gen.records(record_gen.topology(namespaces=1, services_per_ns=2, edges=2), 3,
                               now - 30, now)]
    rc, out, err = collector.exec(name, ["python", "-c", TLS_PROBE, url, ca_file, token_file,
                                         clusterharness.ADMIN_TOKEN, encode_records(recs).decode()],
                                  container="l7-node-agent")
    assert rc == 0, err
    res = json.loads(out)
    print(f"\nfrom the node agent's pod: {res}")
    assert res["operator_ca"]["status"] == 200 and res["operator_ca"]["answer"]["accepted"] == 3, res
    assert "error" in res["plain_http"], res  # the TLS port does not speak plain HTTP
    assert "CERTIFICATE_VERIFY_FAILED" in res["system_cas"]["error"], res
    assert res["search"] == {"status": 200, "hits": 3}, res


#: Run in the buyer pod: `n` GETs of `url`/chk/<i>, paced over `seconds`; prints the statuses.
PACED_LOAD = """
import collections, json, sys, time, urllib.request
url, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0, got = time.monotonic(), collections.Counter()
for i in range(n):
    time.sleep(max(0.0, t0 + i * seconds / n - time.monotonic()))
    try:
        with urllib.request.urlopen(f"{url}/chk/{i}", timeout=5) as r:
            r.read()
            got[r.status] += 1
    except Exception as e:
        got[type(e).__name__] += 1
print(json.dumps(got))
"""


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ClickHouse (Debian's) on the host, reachable from pods at HOST_IP."""
    from contract import chserver
    if chserver.binary() is None:
        pytest.skip("clickhouse-server is not installed")
    (server,) = chserver.start(tmp_path_factory.mktemp("ch"), count=1,
                               listen=("127.0.0.1", clusterharness.HOST_IP),
                               networks=("127.0.0.1", "::1", "10.0.0.0/8"))
    yield server
    chserver.stop([server])


def _ch_count(server: Any, where: str) -> int:
    q = f"SELECT sum(count) FROM default.l7_local WHERE {where}"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/?query="
                                + urllib.parse.quote(q), timeout=10) as r:
        return int(r.read().decode().strip() or 0)


def test_clickhouse_backed_replicas_lose_nothing_when_killed_during_ingest(
        cluster: Cluster, kube: Kube, operator: subprocess.Popen[bytes], namespace: str,
        pods: Pods, clickhouse: Any) -> None:
    """LogStorage `engine: clickhouse`, `server.replicas: 2`: the operator replaces the embedded
    StatefulSet by a stateless Deployment of two replicas behind the Service. Captured traffic
    flows from the buyer to the annotated shop Service while each server replica in turn is
    SIGKILLed (its container, through containerd) and restarted by the kubelet; the node agent's
    shipper retries on a new connection, so every request ends up in ClickHouse exactly once."""
    url = f"clickhouse://{clusterharness.HOST_IP}:{clickhouse.tcp_port}"
    kube.apply({"apiVersion": "l7scope.io/v1", "kind": "LogStorage", "metadata": {"name": "default"},
                "spec": {"engine": "clickhouse", "clickhouse": {"url": url},
                         "server": {"replicas": 2}}}, field_manager="l7scope-test")
    try:
        _clickhouse_replicas(cluster, kube, operator, namespace, pods, clickhouse)
    finally:
        # cluster-scoped: it would outlive this module and its ClickHouse (the next module's
        # server would point at a stopped ClickHouse)
        kube.delete(logstorage.PATH)


def _clickhouse_replicas(cluster: Cluster, kube: Kube, operator: subprocess.Popen[bytes],
                         namespace: str, pods: Pods, clickhouse: Any) -> None:
    server_pods = Pods(kube, NS)

    def replicas() -> list[dict[str, Any]] | None:
        ps = [p for p in server_pods.list(**{"app.kubernetes.io/name": SERVER})
              if not p["metadata"].get("deletionTimestamp")]
        owners = {o["kind"] for p in ps for o in p["metadata"].get("ownerReferences") or []}
        return ps if len(ps) == 2 and owners == {"ReplicaSet"} and all(map(_ready, ps)) else None
    ps = wait_for(replicas, 180, "two server replicas (Deployment) Ready",
                  diagnose=lambda: server_pods.describe() + operator.log_path.read_text()[-2000:])  # type: ignore[attr-defined]
    with pytest.raises(KubeError):
        kube.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/{SERVER}")
    wait_for(lambda: _ch_count(clickhouse, "1") >= 0, 30, "the l7 table in ClickHouse")
    cip = kube.get(f"/api/v1/namespaces/{namespace}/services/shop")["spec"]["clusterIP"]
    where = f"dest_service_namespace = '{namespace}' AND position(url, '/chk/') > 0"
    n, seconds = 600, 40.0
    result: dict[str, Any] = {}

    def load() -> None:
        rc, out, err = pods.exec("buyer", ["python3", "-c", PACED_LOAD, f"http://{cip}", str(n),
                                           str(seconds)], timeout=seconds + 60)
        result.update(rc=rc, out=out, err=err)
    t = threading.Thread(target=load)
    t0 = time.monotonic()
    t.start()
    killed = []
    try:
        for pod in ps:
            time.sleep(8)
            (cid,) = [c["containerID"].removeprefix("containerd://")
                      for c in pod["status"]["containerStatuses"] if c["name"] == "server"]
            cluster.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            killed.append((pod["metadata"]["name"], round(time.monotonic() - t0, 1)))
            name = pod["metadata"]["name"]
            wait_for(lambda name=name: (p := server_pods.get(name)) and _ready(p) and [
                c for c in p["status"]["containerStatuses"]
                if c["name"] == "server" and c["restartCount"] >= 1], 90,
                f"{name} restarted by the kubelet and Ready", diagnose=server_pods.describe)
    finally:
        t.join(seconds + 90)
    assert result.get("rc") == 0, result
    statuses = json.loads(result["out"])
    assert statuses == {"200": n}, statuses  # the data path never depended on the server
    stored = wait_for(lambda: (c := _ch_count(clickhouse, where)) >= n and c, 90,
                      f"{n} requests stored in ClickHouse",
                      diagnose=lambda: f"stored {_ch_count(clickhouse, where)}")
    time.sleep(3)  # a late duplicate would show now
    final = _ch_count(clickhouse, where)
    print(f"\nClickHouse-backed server, 2 replicas, each SIGKILLed during ingest {killed}: "
          f"sent {n}, answered 200 {statuses['200']}, stored {final}")
    assert stored == final == n




def test_deleting_the_application_layer_removes_the_daemonset(
        kube: Kube, operator: subprocess.Popen[bytes], namespace: str, pods: Pods) -> None:
    """Delete the ApplicationLayer while a client keeps calling the annotated shop Service (a
    new connection every 0.1 s, 1 s timeout): Envoy, collector and node agent get their SIGTERM
    together, the agent withdraws the capture rules first, so at most a call in flight at that
    moment fails (Envoy has no drain at its stop) and every call from 2 s on is answered; the
    DaemonSet and its pod are gone, the rules with them, and the Service still answers (now
    through kube-proxy alone)."""
    collector = Pods(kube, NS)
    assert _collector_pods(collector), "the workshop test left no collector pod to remove"
    cip = kube.get(f"/api/v1/namespaces/{namespace}/services/shop")["spec"]["clusterIP"]
    result: dict[str, tuple[int, str, str]] = {}

    def probe() -> None:
        result["probe"] = pods.exec("buyer", ["python3", "-c", PROBE_LOOP, f"http://{cip}/probe", "40"],
                                    timeout=120)
    th = threading.Thread(target=probe)
    th.start()
    time.sleep(4)
    deleted_at = time.time()
    kube.delete(AL_PATH)
    wait_for(lambda: not _collector_pods(collector), 90, "the l7-log-collector pod to go",
             diagnose=collector.describe)
    gone_after = time.time() - deleted_at
    th.join(130)
    rc, out, err = result["probe"]
    assert rc == 0, err
    samples = json.loads(out)
    before = [ok for t, ok in samples if t < deleted_at]
    after = [(round(t - deleted_at, 2), ok) for t, ok in samples if t >= deleted_at]
    failed = [t for t, ok in after if not ok]
    print(f"\nApplicationLayer deleted during calls: the collector pod was gone {gone_after:.1f}s "
          f"later; {len(failed)} of {len(after)} calls after the deletion failed {failed[:20]}; "
          f"{len(before)} before it, all ok: {all(before)}")
    assert len(before) >= 10 and all(before)
    assert len(after) >= 100 and len(failed) <= 3 and all(t < 2.0 for t in failed), failed
    with pytest.raises(KubeError) as e:
        kube.get(f"/apis/apps/v1/namespaces/{NS}/daemonsets/l7-log-collector")
    assert e.value.status == 404
    table = clusterharness.in_netns("nft", "list", "table", "inet", "l7scope", check=False)
    assert table.returncode != 0, f"the capture table outlived the node agent:\n{table.stdout[:500]}"
    rc, out, err = pods.exec("buyer", ["python3", "-c", CLIENT, f"http://{cip}", "5"])
    assert rc == 0 and [a[0] for a in json.loads(out)] == [200] * 5, err


def test_operator_pod_runs(cluster: Cluster, kube: Kube, manifest: list[dict[str, Any]]) -> None:
    """The install manifest's operator Deployment as a real pod: it stays up (no restart) and
    ready for 20 s."""
    (deployment,) = [d for d in manifest if d["kind"] == "Deployment"]
    kube.apply(deployment, field_manager="l7scope-test")
    pods = Pods(kube, NS)
    sel = clusterharness.OPERATOR_SELECTOR
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
