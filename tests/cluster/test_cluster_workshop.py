"""The workshop on real pods, step by step as docs/install.md tells a user, with the demo's shop
as real Deployments and Services from the project image:

0. `deploy/install.yaml` (CRDs first, then the rest) with the operator's image set: the operator
   runs as a real pod with the manifest's service account;
1. `kubectl patch nodeagentconfiguration default` (the Policy Sync prefix);
2. the seed's ApplicationLayer;
3. `l7-log-collector-*` Running with its three containers ready;
4. the shop's Services annotated `projectcalico.org/l7-logging=true`, its pods restarted;
5. load from a real pod (the demo's load generator, a fixed number of requests), then the
   server read through its API (https verified with the operator's CA, a reader's token): every
   edge of the shop present, and the stored counts equal to the shop's own counts.

No cluster DNS (Debian has no CoreDNS): the shop's pods dial their peers through the Service
environment variables the kubelet injects (`CARTSERVICE_SERVICE_HOST`, ...; docs/demo.md). The
node agents' `--server https://l7scope-server.l7scope-system.svc` is the operator's; that one
name is given to the DaemonSet with `hostAliases`, as test_cluster_operator does.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clusterharness
import pytest
import yaml
from clusterharness import PROBE_LOOP, Cluster, Pods, wait_for

from l7scope.contracts import api
from l7scope.demo.shop import catalog
from l7scope.demo.topology import ANNOTATION
from l7scope.kube.client import Kube
from l7scope.operator import tls
from l7scope.operator.render import DAEMONSET, SERVER, SERVER_PORT
from l7scope.testing.workshop import AL_PATH, WORKSHOP_AL

from .test_cluster_operator import (
    NS,
    _collector_pods,
    _envoy_requests,
    _ready,
    _server_volume,
    _token,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER_IMAGE = "ghcr.io/l7scope/l7scope:0.1.0"  # deploy/install.yaml's image
PV = "l7scope-workshop-server-data"
LOADGEN = catalog.LOADGEN
#: shopper requests to the frontend in the main test (each fans out to ~5-15 calls)
REQUESTS = 150
COUNTS_DIR = "/counts"
PROBER = "prober"


def env_name(service: str) -> str:
    """The prefix of a Service's environment variables (`redis-cart` -> `REDIS_CART`)."""
    return service.upper().replace("-", "_")


def app_of(name_aggr: str) -> str:
    """`cartservice-5c8d7f9b4-*` (a Deployment's pods) -> `cartservice`."""
    return name_aggr.rsplit("-", 2)[0] if name_aggr.endswith("-*") else name_aggr


# ---- the install, steps 0 to 3 -----------------------------------------------------------------
def install_manifest(image: str) -> list[dict[str, Any]]:
    """deploy/install.yaml with the operator's image set, as docs/install.md says (`kubectl set
    image` and the operator's `--image` argument)."""
    text = (REPO / "deploy" / "install.yaml").read_text()
    assert text.count(PLACEHOLDER_IMAGE) == 2, "install.yaml: the operator's image and --image"
    return [d for d in yaml.safe_load_all(text.replace(PLACEHOLDER_IMAGE, image)) if d]


def _established(kube: Kube, crds: list[dict[str, Any]]) -> bool:
    for d in crds:
        got = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{d['metadata']['name']}")
        if not any(c["type"] == "Established" and c["status"] == "True"
                   for c in (got.get("status") or {}).get("conditions") or []):
            return False
    return True


def _operator_pods(pods: Pods) -> list[dict[str, Any]]:
    return pods.list(**clusterharness.OPERATOR_SELECTOR)


@dataclass
class Install:
    operator_restarts: int = 0
    collector_ready_s: float = 0.0
    pv_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def install(cluster: Cluster, kube: Kube) -> Iterator[Install]:
    # test_cluster_operator's namespace of the same name may still be going away
    wait_for(lambda: not kube.exists(f"/api/v1/namespaces/{NS}"), 180,
             f"namespace {NS} of an earlier module to be gone")
    out = Install()
    docs = install_manifest(cluster.image("l7scope"))
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for d in crds:  # `kubectl apply -f deploy/helm/l7scope/crds/`, `kubectl wait ... established`
        kube.apply(d, field_manager="kubectl")
    wait_for(lambda: _established(kube, crds), 30, "the CRDs to be established")
    out.pv_dir = _server_volume(kube, PV)
    k = cluster.kube()  # a fresh client: discovery must see the new resources
    try:
        for d in docs:  # `kubectl apply -f deploy/install.yaml`
            k.apply(d, field_manager="kubectl")
    finally:
        k.close()
    pods = Pods(kube, NS)
    wait_for(lambda: [p for p in _operator_pods(pods) if _ready(p)], 120,
             "the operator pod Ready", diagnose=pods.describe)
    # 1. the Policy Sync API
    kube.merge_patch("/apis/l7scope.io/v1/nodeagentconfigurations/default",
                     {"spec": {"policySyncPathPrefix": "/var/run/nodeagent"}})
    # 2. the seed's ApplicationLayer
    t0 = time.monotonic()
    kube.apply(yaml.safe_load(WORKSHOP_AL), field_manager="kubectl")
    wait_for(lambda: [p for p in _collector_pods(pods) if _ready(p)], 180,
             "the l7-log-collector pod Ready", diagnose=pods.describe)
    out.collector_ready_s = time.monotonic() - t0
    nac = kube.get("/apis/l7scope.io/v1/nodeagentconfigurations/default")["spec"]
    assert nac["tproxyMode"] == "Enabled" and nac["policySyncPathPrefix"] == "/var/run/nodeagent", nac
    # No cluster DNS: the node agents' server name through hostAliases (rolls the pod once).
    cip = kube.get(f"/api/v1/namespaces/{NS}/services/{SERVER}")["spec"]["clusterIP"]
    kube.merge_patch(f"/apis/apps/v1/namespaces/{NS}/daemonsets/{DAEMONSET}",
                     {"spec": {"template": {"spec": {"hostAliases": [
                         {"ip": cip, "hostnames": [f"{SERVER}.{NS}.svc", f"{SERVER}.{NS}"]}]}}}})
    collector_pod(pods, 180)
    wait_for(lambda: (kube.get(AL_PATH).get("status") or {}).get("state") == "Ready", 60,
             "ApplicationLayer Ready")
    yield out
    # Uninstall as docs/install.md says: the ApplicationLayer first (the operator removes its
    # finalizer), then the manifest's namespace.
    try:
        kube.delete(AL_PATH)
        wait_for(lambda: not kube.exists(AL_PATH), 60, "the ApplicationLayer to go")
    finally:
        kube.delete(f"/api/v1/namespaces/{NS}")
        kube.delete(f"/api/v1/persistentvolumes/{PV}")


def collector_pod(pods: Pods, timeout: float = 120, node: str = clusterharness.NODE) -> dict[str, Any]:
    """The current l7-log-collector pod (with the hostAliases) of `node`, once every node has
    exactly one, Ready, every container ready (the DaemonSet: one pod per node)."""
    nodes = {n["metadata"]["name"] for n in pods.kube.list("/api/v1/nodes")[0]}

    def one() -> dict[str, Any] | None:
        ps = [p for p in _collector_pods(pods) if p["spec"].get("hostAliases")
              and not p["metadata"].get("deletionTimestamp")]
        if sorted(p["spec"].get("nodeName") for p in ps) != sorted(nodes):
            return None
        for p in ps:
            cs = p["status"].get("containerStatuses") or []
            if not _ready(p) or len(cs) != 3 or not all(c["ready"] for c in cs):
                return None
        (mine,) = [p for p in ps if p["spec"]["nodeName"] == node]
        return mine
    pod: dict[str, Any] = wait_for(one, timeout, f"an l7-log-collector pod Ready (3/3) on each "
                                   f"of {sorted(nodes)}", diagnose=pods.describe)
    return pod


# ---- the shop, step 4 -------------------------------------------------------------------------
def _shop_objects(image: str, namespace: str) -> list[dict[str, Any]]:
    """A Deployment + Service per shop Service, and the load generator's Deployment. Peers by
    the Service environment variables (the kubelet expands `$(VAR)` in the command)."""
    objs: list[dict[str, Any]] = []

    def deployment(app: str, command: list[str], probe_port: int | None) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": app, "image": image, "imagePullPolicy": "Never", "command": command,
            "volumeMounts": [{"name": "counts", "mountPath": COUNTS_DIR}]}
        if probe_port is not None:
            container["readinessProbe"] = {"tcpSocket": {"port": probe_port}, "periodSeconds": 2}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": namespace, "labels": {"app": app}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                         "template": {"metadata": {"labels": {"app": app}}, "spec": {
                             "terminationGracePeriodSeconds": 2,
                             "containers": [container],
                             "volumes": [{"name": "counts", "emptyDir": {}}]}}}}

    for svc in catalog.SERVICES:
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": svc.name, "namespace": namespace, "labels": {"app": svc.name}},
                     "spec": {"selector": {"app": svc.name}, "ports": [
                         {"name": svc.port_name, "port": svc.port, "targetPort": svc.target_port}]}})
    for svc in catalog.SERVICES:
        peers = [f"--peer={c}=$({env_name(c)}_SERVICE_HOST):$({env_name(c)}_SERVICE_PORT)"
                 for c in svc.calls]
        objs.append(deployment(svc.name, [
            "python", "-m", "l7scope.demo.shop.pod", "--service", svc.name,
            "--counts-dir", COUNTS_DIR, "--seed", "7", *peers], svc.target_port))
    objs.append(deployment(LOADGEN, ["sleep", "infinity"], None))
    return objs


@dataclass
class Shop:
    namespace: str
    pods: Pods
    cips: dict[str, str]  # Service -> ClusterIP

    def by_app(self) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["labels"]["app"]: p for p in self.pods.list()
                if not p["metadata"].get("deletionTimestamp")}

    def loadgen(self) -> str:
        return str(self.by_app()[LOADGEN]["metadata"]["name"])


def _all_ready(pods: Pods, n: int, old_uids: set[str]) -> dict[str, dict[str, Any]] | None:
    ps = pods.list()
    if len(ps) != n or any(p["metadata"].get("deletionTimestamp") or p["metadata"]["uid"] in old_uids
                           or not _ready(p) for p in ps):
        return None
    return {p["metadata"]["labels"]["app"]: p for p in ps}


def capture_ready(shop: Shop) -> bool:
    """On every node with a shop pod: every shop ClusterIP in that node agent's `services` set
    and the node's shop pods' IPs in its `clients` set: a connection opened now is captured."""
    by_node: dict[str, list[str]] = {}
    for p in shop.pods.list():
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP"):
            by_node.setdefault(p["spec"]["nodeName"], []).append(p["status"]["podIP"])
    for node, ips in by_node.items():
        ruleset = clusterharness.in_netns("nft", "list", "table", "inet", "l7scope", check=False,
                                          node=clusterharness.spec_named(node)).stdout
        if not all(re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d.])", ruleset)
                   for ip in [*shop.cips.values(), *ips]):
            return False
    return True


@pytest.fixture(scope="module")
def shop(cluster: Cluster, kube: Kube, install: Install, namespace: str, pods: Pods) -> Shop:
    for obj in _shop_objects(cluster.image("l7scope"), namespace):
        kube.create(obj)
    n = len(catalog.SERVICES) + 1
    first = wait_for(lambda: _all_ready(pods, n, set()), 240, f"the shop's {n} pods Ready",
                     diagnose=pods.describe)
    cips = {s.name: kube.get(f"/api/v1/namespaces/{namespace}/services/{s.name}")["spec"]["clusterIP"]
            for s in catalog.SERVICES}
    # 4. annotate every Service, then restart the pods (only connections opened after the
    # annotation are captured: docs/install.md)
    for s in catalog.SERVICES:
        kube.merge_patch(f"/api/v1/namespaces/{namespace}/services/{s.name}",
                         {"metadata": {"annotations": {ANNOTATION: "true"}}})
    old = {p["metadata"]["uid"] for p in first.values()}
    for p in first.values():  # `kubectl delete pods --all`
        kube.delete(pods.path(p["metadata"]["name"]))
    wait_for(lambda: _all_ready(pods, n, old), 240, "the shop's restarted pods Ready",
             diagnose=pods.describe)
    s = Shop(namespace, pods, cips)
    wait_for(lambda: capture_ready(s), 60, "the shop's ClusterIPs and pods in the capture sets")
    return s


# ---- reading what the shop counted and what the server stored ---------------------------------
def shop_counts(shop: Shop) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(completed, failed) per (caller, callee) from every pod's own counts file."""
    done: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    for app, pod in shop.by_app().items():
        if app not in catalog.BY_NAME and app != LOADGEN:
            continue
        rc, out, err = shop.pods.exec(pod["metadata"]["name"], ["cat", f"{COUNTS_DIR}/{app}.json"])
        if app == LOADGEN and rc != 0 and "No such file" in err:
            continue  # its pod idles until a run_load(): no run yet, no requests
        assert rc == 0, (app, err)
        data = json.loads(out)
        for dst, k in data["completed"].items():
            done[(app, dst)] += int(k)
        for dst, k in data["failed"].items():
            failed[(app, dst)] += int(k)
    return done, failed


QUERY = """
import json, ssl, sys, urllib.request
base, token, ca, path, body = sys.argv[1:6]
ctx = ssl.create_default_context(cadata=ca)  # the operator's CA bundle: the server is https
req = urllib.request.Request(base + path, data=body.encode(), method="POST", headers={
    "Authorization": "Bearer " + token, "Content-Type": "application/json"})
print(json.dumps(json.load(urllib.request.urlopen(req, timeout=30, context=ctx))))
"""


def pipeline_logs(collector: Pods, lines: int = 25) -> str:
    """The last log lines of the node agent, the collector and the server, and the pods."""
    out = [collector.describe()]
    for p in collector.list():
        name = p["metadata"]["name"]
        containers = [c["name"] for c in p["spec"]["containers"]]
        for c in containers:
            if name.startswith("l7-log-collector-") and c in ("l7-node-agent", "l7-collector") \
                    or name.startswith("l7scope-server"):
                try:
                    text = collector.logs(name, c)
                except Exception as e:  # a container that is not running yet
                    text = f"(no log: {e})"
                out.append(f"--- {name}/{c}:\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(out)


@dataclass
class ServerApi:
    """The server's query API, called from the load generator's pod over https."""

    shop: Shop
    base: str
    token: str
    ca: str

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        rc, out, err = self.shop.pods.exec(self.shop.loadgen(), [
            "python", "-c", QUERY, self.base, self.token, self.ca, path, json.dumps(body)])
        assert rc == 0, err[-2000:]
        doc: dict[str, Any] = json.loads(out)
        return doc

    def edges(self) -> Counter[tuple[str, str]]:
        """Stored sum of `count` per (caller app, callee Service) of the shop's namespace."""
        doc = self.post(api.AGGREGATION_PATH, {
            "selector": f'dest_service_namespace = "{self.shop.namespace}"',
            "time_range": {"from": "now-1h"},
            "group_by": ["src_name_aggr", "dest_service_name"], "limit": 10000})
        out: Counter[tuple[str, str]] = Counter()
        for g in doc["groups"]:
            out[(app_of(str(g["key"]["src_name_aggr"])), str(g["key"]["dest_service_name"]))] += int(g["count"])
        return out


@pytest.fixture(scope="module")
def server_api(kube: Kube, shop: Shop) -> Iterator[ServerApi]:
    """A cluster-wide reader (`get pods` everywhere, as docs/install.md step 5 binds `view`)."""
    ns = shop.namespace
    reader = "l7-viewer"
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": reader, "namespace": ns}})
    role = f"{ns}-l7-viewer"
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
               field_manager="l7scope-test")
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": reader, "namespace": ns}]},
               field_manager="l7scope-test")
    cip = kube.get(f"/api/v1/namespaces/{NS}/services/{SERVER}")["spec"]["clusterIP"]
    ca = wait_for(lambda: (kube.get(f"/api/v1/namespaces/{NS}/configmaps/{tls.CA_CONFIGMAP}")
                           .get("data") or {}).get("ca.crt"), 60, "the operator's CA bundle")
    s = ServerApi(shop, f"https://{cip}:{SERVER_PORT}", _token(kube, ns, reader), ca)
    try:
        yield s
    finally:
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{role}")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}")


def run_load(shop: Shop, requests: int, rate: float = 10, seed: int = 7) -> dict[str, Any]:
    """The demo's load generator in its own pod: `requests` shopper requests to the frontend's
    ClusterIP (from FRONTEND_SERVICE_HOST/PORT); its own counts, as it prints them."""
    cmd = (f"exec python -m l7scope.demo.loadgen --target \"$FRONTEND_SERVICE_HOST:$FRONTEND_SERVICE_PORT\" "
           f"--requests {requests} --rate {rate} --users 4 --counts-dir {COUNTS_DIR} --seed {seed}")
    rc, out, err = shop.pods.exec(shop.loadgen(), ["sh", "-c", cmd], timeout=60 + requests / rate * 3)
    assert rc == 0, err[-2000:]
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


def wait_stored(server: ServerApi, want: Counter[tuple[str, str]], timeout: float = 120) -> Counter[tuple[str, str]]:
    """Poll the store until its edges equal `want` (or the time is up); the last answer."""
    last: list[Counter[tuple[str, str]]] = [Counter()]

    def equal() -> bool:
        last[0] = server.edges()
        return last[0] == want
    with contextlib.suppress(AssertionError):  # the caller's assert shows the difference
        wait_for(equal, timeout, "the stored counts to equal the shop's", interval=2)
    return last[0]


def _diff(want: Counter[tuple[str, str]], got: Counter[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    return {f"{s}->{d}": (want[(s, d)], got[(s, d)]) for s, d in sorted(set(want) | set(got))
            if want[(s, d)] != got[(s, d)]}


# ---- the tests --------------------------------------------------------------------------------
def test_workshop_shop_on_real_pods(kube: Kube, install: Install, shop: Shop,
                                    server_api: ServerApi) -> None:
    t0 = time.monotonic()
    collector = Pods(kube, NS)
    agent = collector_pod(collector)
    statuses = {c["name"]: c for c in agent["status"]["containerStatuses"]}
    assert sorted(statuses) == ["envoy-proxy", "l7-collector", "l7-node-agent"]
    assert all(c["ready"] and "running" in c["state"] for c in statuses.values()), statuses
    envoy_before = _envoy_requests(collector, agent["metadata"]["name"])

    load = run_load(shop, REQUESTS)
    time.sleep(1.5)  # the pods write their counts every 0.5 s
    want, failed = shop_counts(shop)
    print(f"\nload generator: {sum(load['completed'].values())} requests completed, statuses "
          f"{load['statuses']}, failed {load['failed']}")
    print(f"shop's own counts: {sum(want.values())} requests on {len(want)} edges, failed "
          f"{dict(failed) or 0}")
    assert sum(load["completed"].values()) + sum(load["failed"].values()) == REQUESTS
    assert want[(LOADGEN, "frontend")] == load["completed"].get("frontend")
    # every edge of the shop had traffic
    assert set(want) == catalog.edges(), sorted(catalog.edges() - set(want))
    assert not failed, f"requests that never got an answer: {dict(failed)}"

    got = wait_stored(server_api, want)
    stored_after = time.monotonic() - t0
    assert got == want, (f"edge: (shop's count, stored) where they differ: {_diff(want, got)}\n"
                         + pipeline_logs(collector))
    # ... and it stays so: nothing arrives twice or late
    time.sleep(8)
    assert server_api.edges() == want
    envoy = _envoy_requests(collector, agent["metadata"]["name"]) - envoy_before
    print(f"stored == shop's counts on all {len(want)} edges ({sum(got.values())} requests), "
          f"{stored_after:.0f}s after the load began; Envoy completed {envoy} HTTP/gRPC requests "
          f"(redis-cart is TCP)")
    for (src, dst), k in sorted(want.items()):
        print(f"  {src} -> {dst}: {k}")
    print(collector.describe().split("\nevent", 1)[0])
    (op,) = _operator_pods(collector)
    restarts = op["status"]["containerStatuses"][0]["restartCount"]
    print(f"operator pod restarts: {restarts}; l7-log-collector Ready "
          f"{install.collector_ready_s:.1f}s after the ApplicationLayer")


# ---- failures on real pods --------------------------------------------------------------------
def settled(server: ServerApi, quiet: float = 8, timeout: float = 90) -> Counter[tuple[str, str]]:
    """The store's edges once two reads `quiet` s apart agree (nothing more on its way)."""
    deadline = time.monotonic() + timeout
    last = server.edges()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = server.edges()
        if now == last:
            return now
        last = now
    raise AssertionError(f"the store did not settle in {timeout}s")


def delta(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """What the shop counted between two reads of its counts files. Each load generator run is
    a new process whose file starts from 0: its edge is the newer file's count."""
    out = Counter({k: v for k, v in after.items() if k[0] != LOADGEN}) - Counter(
        {k: v for k, v in before.items() if k[0] != LOADGEN})
    out.update({k: v for k, v in after.items() if k[0] == LOADGEN and v})
    return out


def load_is_stored(shop: Shop, server: ServerApi, requests: int) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Run `requests` shopper requests; (what the shop counted for them, what the store added)."""
    before_stored = settled(server)
    before, _ = shop_counts(shop)
    run_load(shop, requests, seed=requests)
    time.sleep(1.5)
    after, failed = shop_counts(shop)
    assert not failed, dict(failed)
    want = delta(before, after)
    got = wait_stored_delta(server, before_stored, want)
    return want, got


def wait_stored_delta(server: ServerApi, base: Counter[tuple[str, str]], want: Counter[tuple[str, str]],
                      timeout: float = 120) -> Counter[tuple[str, str]]:
    last: list[Counter[tuple[str, str]]] = [Counter()]

    def equal() -> bool:
        last[0] = server.edges() - base
        return last[0] == want
    with contextlib.suppress(AssertionError):
        wait_for(equal, timeout, "the stored counts to grow by the shop's", interval=2)
    return last[0]


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == name]
    return c


def test_envoy_killed_fails_open_and_capture_returns(cluster: Cluster, kube: Kube, shop: Shop,
                                                    server_api: ServerApi) -> None:
    """SIGKILL the Envoy container of the l7-log-collector pod (through the node's containerd):
    requests to the annotated frontend keep being answered (the node agent withdraws the rules
    while Envoy is not ready), the kubelet restarts Envoy, and capture returns: the next load is
    stored exactly."""
    collector = Pods(kube, NS)
    agent = collector_pod(collector)
    envoy = _container(agent, "envoy-proxy")
    cid = envoy["containerID"].split("://", 1)[1]
    result: dict[str, tuple[int, str, str]] = {}
    # The probe runs in a pod of its own, so its requests (some captured, some not) are an edge
    # of their own (prober -> frontend), apart from the shop's counted ones.
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": PROBER, "namespace": shop.namespace, "labels": {"app": PROBER}},
                 "spec": {"terminationGracePeriodSeconds": 1, "enableServiceLinks": True,
                          "nodeName": clusterharness.NODE,  # the node whose Envoy is killed
                          "containers": [{"name": PROBER, "image": cluster.image("l7scope"),
                                          "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}]}})
    shop.pods.wait_ready(PROBER)
    wait_for(lambda: capture_ready(shop), 60, "the prober's IP in the capture set")

    def probe() -> None:
        result["probe"] = shop.pods.exec(PROBER, ["python", "-c", PROBE_LOOP,
                                          "http://$FRONTEND_SERVICE_HOST:$FRONTEND_SERVICE_PORT/_healthz", "20"], timeout=90)
    th = threading.Thread(target=probe)
    th.start()
    time.sleep(4)
    killed_at = time.time()
    cluster.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    th.join(100)
    rc, out, err = result["probe"]
    assert rc == 0, err
    samples = json.loads(out)
    before = [ok for t, ok in samples if t < killed_at]
    after = [(t - killed_at, ok) for t, ok in samples if t >= killed_at]
    failures = [t for t, ok in after if not ok]
    print(f"\nEnvoy killed: {len(failures)} of {len(after)} requests after the kill failed "
          f"(the last {max(failures, default=0):.2f}s after it); {len(before)} before it, all ok: "
          f"{all(before)}")
    assert len(before) >= 10 and all(before)
    assert all(ok for t, ok in after if t > 3.0), after  # fail open within 3 s
    assert len([1 for t, ok in after if t > 3.0]) >= 50

    def restarted() -> dict[str, Any] | None:
        p = collector_pod(collector)
        c = _container(p, "envoy-proxy")
        return p if c["restartCount"] > envoy["restartCount"] and c["ready"] else None
    pod = wait_for(restarted, 120, "the kubelet to restart Envoy", diagnose=collector.describe)
    assert pod["metadata"]["uid"] == agent["metadata"]["uid"]  # the same pod, a new container
    wait_for(lambda: capture_ready(shop), 60, "the capture rules back")
    want, got = load_is_stored(shop, server_api, 30)
    # the probe's own edge is not counted by anyone; what of it arrived after the store had
    # settled (before the load) is printed, not compared
    late = got.pop((PROBER, "frontend"), 0)
    print(f"after the restart (Envoy restartCount {_container(pod, 'envoy-proxy')['restartCount']}): "
          f"{sum(want.values())} new requests, {sum(got.values())} stored; the probe's "
          f"{len(samples)} requests: {server_api.edges()[(PROBER, 'frontend')]} stored, {late} of "
          f"them after the store had settled")
    assert got == want, _diff(want, got)


@pytest.mark.timeout(600)
def test_node_agent_pod_deleted_loses_no_record(kube: Kube, shop: Shop, server_api: ServerApi) -> None:
    """Delete the l7-log-collector pod right after a load (records still in Envoy's log, the
    collector's interval, the agent's aggregation and shipping): the DaemonSet's new pod comes
    up, every request of that load is stored, and nothing stored before is lost or doubled."""
    collector = Pods(kube, NS)
    old = collector_pod(collector)
    before_stored = settled(server_api)
    before, _ = shop_counts(shop)
    run_load(shop, 30, seed=3)
    followed = [collector.follow(old["metadata"]["name"], c)
                for c in ("envoy-proxy", "l7-collector", "l7-node-agent")]
    kube.delete(collector.path(old["metadata"]["name"]))  # `kubectl delete pod`, default grace
    deleted_at = time.monotonic()
    time.sleep(1.5)
    after, failed = shop_counts(shop)
    assert not failed, dict(failed)
    want = delta(before, after)

    def replaced() -> dict[str, Any] | None:
        p = collector_pod(collector)
        return p if p["metadata"]["uid"] != old["metadata"]["uid"] else None
    new = wait_for(replaced, 120, "the DaemonSet's new l7-log-collector pod Ready",
                   diagnose=collector.describe)
    up_after = time.monotonic() - deleted_at
    got = wait_stored_delta(server_api, before_stored, want)
    print(f"\nnode agent pod {old['metadata']['name']} deleted right after {sum(want.values())} "
          f"requests; {new['metadata']['name']} Ready {up_after:.0f}s later; stored "
          f"{sum(got.values())} of them")
    assert got == want, (_diff(want, got), "\n".join(f.text() for f in followed),
                         pipeline_logs(collector))
    now = server_api.edges()
    assert all(now[k] >= v for k, v in before_stored.items())  # nothing stored before is gone
    # and the new pod captures
    wait_for(lambda: capture_ready(shop), 60, "the new agent's capture rules")
    want2, got2 = load_is_stored(shop, server_api, 20)
    assert got2 == want2, _diff(want2, got2)


# ---- two nodes: capture on the client's node, server pod on the same or the other node --------
def test_cross_node_and_same_node_capture(cluster: Cluster, kube: Kube, shop: Shop,
                                          server_api: ServerApi) -> None:
    """An annotated Service whose only endpoint is on the last node; one client pod on node 1
    (cross node when there are two) and one on the endpoint's node (same node): each client's
    own count of answered requests is exactly what the server stores for its edge."""
    from .test_cluster_workloads import CLIENT, WEB

    ns, image = shop.namespace, cluster.image("l7scope")
    far = cluster.nodes[-1].name

    def pod(name: str, node: str, command: list[str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "nodeName": node, "containers": [
                    {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}]}}
    svc = kube.create({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "xsrv", "namespace": ns,
                                    "annotations": {ANNOTATION: "true"}},
                       "spec": {"selector": {"app": "xsrv"},
                                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    clients = {"xcli-near": far, "xcli-far": clusterharness.NODE}
    kube.create(pod("xsrv", far, ["python3", "-c", WEB]))
    for name, node in clients.items():
        kube.create(pod(name, node, ["sleep", "infinity"]))
    for name in ("xsrv", *clients):
        shop.pods.wait_ready(name)
    cip = svc["spec"]["clusterIP"]
    wait_for(lambda: capture_ready(Shop(ns, shop.pods, {**shop.cips, "xsrv": cip})), 60,
             "the new Service and pods in the capture sets")
    base = settled(server_api)
    want: Counter[tuple[str, str]] = Counter()
    for name in clients:
        rc, out, err = shop.pods.exec(name, ["python3", "-c", CLIENT, f"http://{cip}", "20"])
        assert rc == 0, err
        want[(name, "xsrv")] = sum(1 for a in json.loads(out) if a[0] == 200)
    got = wait_stored_delta(server_api, base, want)
    print(f"\nserver pod on {far}; clients {clients}: client counts {dict(want)}, stored {dict(got)}")
    assert got == want, _diff(want, got)
