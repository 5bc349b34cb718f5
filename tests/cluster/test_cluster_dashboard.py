"""`l7scope dashboard`, `status -P` and `observe -P` against the server the operator installed on
the real node: the CLI (a host process, the project's venv) finds the Service through a
kubeconfig, forwards a loopback port through the API server's `pods/portforward` (API server ->
the kubelet's streaming server -> containerd -> the pod's network namespace), verifies TLS
with the operator's CA from its ConfigMap, and logs in with a ServiceAccount's own token.
Also: RBAC without `pods/portforward` and a namespace without a server fail with the message
and exit code the CLI promises."""

from __future__ import annotations

import json
import select
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clusterharness
import httpx
import msgspec
import pytest
import yaml
from clusterharness import Cluster, Pods, wait_for

from l7scope.contracts import bulk
from l7scope.contracts.auth import SESSION_COOKIE, TOKEN_AUDIENCE, WHOAMI_PATH, bearer
from l7scope.contracts.install import CA_CERT_KEY, CA_CONFIGMAP, SERVER
from l7scope.contracts.record import TYPE_UNLOGGED, encode_records
from l7scope.kube.client import Kube
from l7scope.operator import tls
from l7scope.operator.render import SERVICE_ACCOUNT
from l7scope.testing import record_gen
from l7scope.testing.workshop import AL_PATH, WORKSHOP_AL

from .test_cluster_operator import NS, PV, _ready, _token, manifest, operator  # noqa: F401

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXE = str(REPO / ".venv" / "bin" / "l7scope")
HOST = "pf-probe"  # the records this module ships carry this host


@pytest.fixture(scope="module", autouse=True)
def _operator_namespace_gone(kube: Kube) -> Iterator[None]:
    """Set up before `manifest` (autouse), so torn down after it: wait until the operator's
    namespace and the server's volume are gone, so the next module can install them again."""
    yield
    wait_for(lambda: not kube.exists(f"/api/v1/namespaces/{NS}")
             and not kube.exists(f"/api/v1/persistentvolumes/{PV}"), 120,
             f"namespace {NS} deleted")


@pytest.fixture(scope="module")
def server_up(kube: Kube, operator: subprocess.Popen[bytes]) -> Iterator[str]:  # noqa: F811
    """The workshop's ApplicationLayer: the operator creates the server (and the DaemonSet).
    Yields the server pod's name; the ApplicationLayer is deleted (by the operator, which must
    still run to drop its finalizer) at the end."""
    kube.apply(yaml.safe_load(WORKSHOP_AL), field_manager="l7scope-test")
    pods = Pods(kube, NS)

    def settled() -> bool:
        """The server's certificate names the Service's ClusterIP (the operator issues it a
        second time once the Service has one, which rolls the pod) and the StatefulSet has
        rolled: its one pod runs the current revision and is ready."""
        cip = kube.get(f"/api/v1/namespaces/{NS}/services/{SERVER}")["spec"].get("clusterIP")
        pair = tls.pair_from_secret(kube.get(f"/api/v1/namespaces/{NS}/secrets/{tls.SERVER_SECRET}"))
        if not cip or pair is None or cip.encode() not in _san_ips(pair.cert_pem).split():
            return False
        sts = kube.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/{SERVER}")
        st = sts.get("status") or {}
        return (st.get("observedGeneration") == sts["metadata"]["generation"]
                and st.get("currentRevision") == st.get("updateRevision")
                and st.get("readyReplicas") == st.get("updatedReplicas") == sts["spec"]["replicas"])

    def ready() -> str | None:
        assert operator.poll() is None, operator.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
        if not settled():
            return None
        ps = [p for p in pods.list() if p["metadata"]["name"].startswith(f"{SERVER}-") and _ready(p)
              and not p["metadata"].get("deletionTimestamp")]
        collectors = [p for p in pods.list() if p["metadata"]["name"].startswith("l7-log-collector-")
                      and _ready(p)]
        return ps[0]["metadata"]["name"] if ps and collectors else None
    name = wait_for(ready, 180, "the server and collector pods Ready", diagnose=pods.describe)
    wait_for(lambda: (kube.get(f"/api/v1/namespaces/{NS}/configmaps/{CA_CONFIGMAP}").get("data")
                      or {}).get(CA_CERT_KEY), 60, "the operator's CA bundle")
    yield str(name)
    kube.delete(AL_PATH)
    wait_for(lambda: not kube.exists(AL_PATH), 90, "the ApplicationLayer deleted")


def _san_ips(cert_pem: bytes) -> bytes:
    from cryptography import x509

    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return b" ".join(str(i).encode() for i in san.get_values_for_type(x509.IPAddress))


def _account(cluster: Cluster, kube: Kube, namespace: str, name: str, tmp: Path, *,
             portforward: bool) -> Path:
    """A ServiceAccount with what `dashboard` needs in the operator's namespace (get the Service
    and the CA ConfigMap, list pods, and with `portforward` get+create pods/portforward), `get
    pods` everywhere (the server's rule for a reader of every namespace); its kubeconfig."""
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": name, "namespace": namespace}})
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    if portforward:
        rules.append({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]})
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    rbac = "rbac.authorization.k8s.io"
    kube.apply({"apiVersion": f"{rbac}/v1", "kind": "Role",
                "metadata": {"name": f"{namespace}-{name}", "namespace": NS}, "rules": rules},
               field_manager="l7scope-test")
    kube.apply({"apiVersion": f"{rbac}/v1", "kind": "RoleBinding",
                "metadata": {"name": f"{namespace}-{name}", "namespace": NS},
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": f"{namespace}-{name}"},
                "subjects": subject}, field_manager="l7scope-test")
    kube.apply({"apiVersion": f"{rbac}/v1", "kind": "ClusterRole",
                "metadata": {"name": f"{namespace}-{name}"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
               field_manager="l7scope-test")
    kube.apply({"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{namespace}-{name}"},
                "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": f"{namespace}-{name}"},
                "subjects": subject}, field_manager="l7scope-test")
    return clusterharness.service_account_kubeconfig(cluster, kube, namespace, name,
                                                     tmp / f"{name}.kubeconfig")


def _drop_accounts(kube: Kube, namespace: str, *names: str) -> None:
    for name in names:
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{namespace}-{name}")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{namespace}-{name}")


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _read_line(stream: Any, proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([stream], [], [], 0.5)[0]:
            line: str = stream.readline()
            if line:
                return line
        if proc.poll() is not None:
            break
    raise AssertionError(f"no line from `l7scope dashboard` in {timeout}s (rc {proc.poll()}): "
                         f"{proc.stderr.read() if proc.poll() is not None and proc.stderr else ''}")


def test_dashboard_status_and_observe_through_a_real_port_forward(
        cluster: Cluster, kube: Kube, server_up: str, namespace: str,
        tmp_path: Path) -> None:
    reader_kc = _account(cluster, kube, namespace, "viewer", tmp_path, portforward=True)
    ca = kube.get(f"/api/v1/namespaces/{NS}/configmaps/{CA_CONFIGMAP}")["data"][CA_CERT_KEY]
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    dash = subprocess.Popen([EXE, "dashboard", "--kubeconfig", str(reader_kc), "--no-browser",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        t0 = time.monotonic()
        link = _read_line(dash.stdout, dash, 60).strip()
        print(f"\ndashboard printed its link after {time.monotonic() - t0:.1f}s: "
              f"{link.split('code=')[0]}code=...")
        assert link.startswith("https://127.0.0.1:") and "/login?code=" in link, link
        base = link.split("/login?")[0]
        with httpx.Client(verify=ctx, timeout=15) as http:
            # the one-time link: the session cookie, then the page and the API with the cookie
            r = http.get(link, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/", r.text
            assert SESSION_COOKIE in r.cookies
            page = http.get(base + "/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            who = http.get(base + WHOAMI_PATH)
            assert who.status_code == 200, who.text
            assert who.json()["user"]["name"] == f"system:serviceaccount:{namespace}:viewer"
            assert who.json()["auth"] == "kubernetes"
            with httpx.Client(verify=ctx, timeout=15) as other:
                assert other.get(link, follow_redirects=False).status_code == 401  # used once
            # records shipped through the same forward, with the node agents' credential
            now = int(time.time())
            recs = [msgspec.structs.replace(x, host=HOST) for x in record_gen.records(
                record_gen.topology(namespaces=1, services_per_ns=2, edges=2), 7, now - 30, now)]
            writer = _token(kube, NS, SERVICE_ACCOUNT, [TOKEN_AUDIENCE])
            shipped = httpx.post(base + bulk.BULK_PATH, content=encode_records(recs),
                                 headers={**bearer(writer), bulk.BATCH_ID_HEADER: f"pf-{now}",
                                          "Content-Type": bulk.CONTENT_TYPE},
                                 verify=ctx, timeout=15)
            assert shipped.status_code == 200 and shipped.json()["accepted"] == 7, shipped.text
        # `observe -P`: its own forward, the viewer's token, the operator's CA from the ConfigMap
        obs = _cli("observe", "-P", "--kubeconfig", str(reader_kc), "--since", "10m",
                   "--selector", f'host = "{HOST}"', "--all", "-o", "jsonl")
        assert obs.returncode == 0, obs.stderr
        got = [json.loads(line) for line in obs.stdout.splitlines()]
        assert len(got) == 7 and {g["host"] for g in got} == {HOST}, obs.stdout[:500]
        top = _cli("top", "-P", "--kubeconfig", str(reader_kc), "--once", "-o", "json",
                   "--window", "10m", "--selector", f'host = "{HOST}"')
        assert top.returncode == 0, top.stderr
        assert sum(r["count"] for r in json.loads(top.stdout)["rows"]) == sum(
            g["count"] for g in got if g["type"] != TYPE_UNLOGGED)
        # `status -P` as the cluster's admin (it reads DaemonSets and nodes, and the server's
        # /api/v1/status needs a reader of every namespace)
        st = _cli("status", "-P", "--kubeconfig", str(cluster.kubeconfig), "-o", "json")
        doc = json.loads(st.stdout)
        server = [p for p in doc["parts"] if p["part"] == "server" and p["addr"].startswith("https://")]
        assert server and server[0]["healthy"], st.stdout
        assert server[0]["stats"]["store"]["records"] >= 7, server[0]
        print(f"status -P: exit {st.returncode}, "
              + ", ".join(f"{p['node']}/{p['part']}: {p['state']}" for p in doc["parts"]))
        assert st.returncode == 0, st.stdout
    finally:
        dash.send_signal(signal.SIGTERM)
        try:
            _, err = dash.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            dash.kill()
            _, err = dash.communicate()
        _drop_accounts(kube, namespace, "viewer")
    assert dash.returncode == 0, err
    assert "connections forwarded" in err, err


def test_dashboard_errors_name_what_is_missing(cluster: Cluster, kube: Kube, server_up: str,
                                              namespace: str, tmp_path: Path) -> None:
    no_pf = _account(cluster, kube, namespace, "no-portforward", tmp_path, portforward=False)
    try:
        r = _cli("dashboard", "--kubeconfig", str(no_pf), "--no-browser", "--port", "0")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "pods/portforward" in r.stderr and "`get` and `create`" in r.stderr, r.stderr
        assert r.stdout == ""
        # a namespace with no l7scope server (the viewer's own), as the admin
        r = _cli("dashboard", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
                 "--no-browser", "--port", "0")
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert f"no l7scope server in namespace {namespace}" in r.stderr, r.stderr
        r = _cli("observe", "-P", "--kubeconfig", str(no_pf), "--server", "https://x:1")
        assert r.returncode == 2 and "exclude each other" in r.stderr, r.stderr
    finally:
        _drop_accounts(kube, namespace, "no-portforward")
