"""Reconcile logic against an in-memory API (the real server runs in tests/kube)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from cryptography import x509

from l7scope.contracts import nodeconfig
from l7scope.kube.client import KubeError, Resource
from l7scope.operator import render, tls
from l7scope.operator.reconcile import OperatorConfig, Reconciler, al_path

PLURALS = {"DaemonSet": ("apps/v1", "daemonsets", True), "ConfigMap": ("v1", "configmaps", True),
           "Deployment": ("apps/v1", "deployments", True),
           "StatefulSet": ("apps/v1", "statefulsets", True), "Service": ("v1", "services", True),
           "ServiceAccount": ("v1", "serviceaccounts", True), "Namespace": ("v1", "namespaces", False),
           "Secret": ("v1", "secrets", True),
           "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies", True),
           "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles", False),
           "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
           "NodeAgentConfiguration": ("l7scope.io/v1", "nodeagentconfigurations", False),
           "ApplicationLayer": ("l7scope.io/v1", "applicationlayers", False),
           "LogStorage": ("l7scope.io/v1", "logstorages", False)}


class MemoryKube:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def resource(self, api_version: str, kind: str) -> Resource:
        av, plural, namespaced = PLURALS[kind]
        return Resource(av, kind, plural, namespaced)

    def _path(self, obj: dict[str, Any]) -> str:
        m = obj["metadata"]
        return self.resource(obj["apiVersion"], obj["kind"]).path(m.get("namespace"), m["name"])

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path not in self.objects:
            raise KubeError(404, "NotFound", path)
        return copy.deepcopy(self.objects[path])

    def exists(self, path: str) -> bool:
        return path in self.objects

    def list(self, path: str, **_: Any) -> tuple[list[dict[str, Any]], str]:
        prefix = path.rstrip("/") + "/"
        return [copy.deepcopy(o) for p, o in self.objects.items() if p.startswith(prefix)], "1"

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        p = self._path(obj)
        if p in self.objects:
            raise KubeError(409, "AlreadyExists", p)
        self.calls.append(("create", p))
        self.objects[p] = copy.deepcopy(obj)
        return self.get(p)

    def apply(self, obj: dict[str, Any], *, field_manager: str, **_: Any) -> dict[str, Any]:
        p = self._path(obj)
        self.calls.append(("apply", p))
        old = self.objects.get(p, {})
        new = copy.deepcopy(obj)
        if "status" in old:  # like the server: apply of the object leaves its status alone
            new["status"] = old["status"]
        if "clusterIP" in old.get("spec", {}):  # allocated by the server, kept on apply
            new["spec"]["clusterIP"] = old["spec"]["clusterIP"]
        if "generation" in old.get("metadata", {}):
            new["metadata"]["generation"] = old["metadata"]["generation"]
        self.objects[p] = new
        return self.get(p)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path))
        base = path.removesuffix("/status")
        obj = self.objects[base]

        def merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
            for k, v in src.items():
                if v is None:
                    dst.pop(k, None)
                elif isinstance(v, dict) and isinstance(dst.get(k), dict):
                    merge(dst[k], v)
                else:
                    dst[k] = copy.deepcopy(v)
        merge(obj, patch)
        return self.get(base)

    def delete(self, path: str, **_: Any) -> bool:
        self.calls.append(("delete", path))
        return self.objects.pop(path, None) is not None


def al(spec: dict[str, Any], name: str = "tigera-secure") -> dict[str, Any]:
    return {"apiVersion": "l7scope.io/v1", "kind": "ApplicationLayer",
            "metadata": {"name": name, "uid": "uid-1", "generation": 1}, "spec": spec}


def setup(spec: dict[str, Any]) -> tuple[MemoryKube, Reconciler, dict[str, Any]]:
    kube = MemoryKube()
    body = al(spec)
    kube.objects[al_path("tigera-secure")] = copy.deepcopy(body)
    return kube, Reconciler(kube, OperatorConfig(namespace="ns1")), body  # type: ignore[arg-type]


def test_enabled_renders_everything_and_sets_node_config() -> None:
    kube, rec, body = setup({"logCollection": {"collectLogs": "Enabled"}})
    assert rec.reconcile(body) == "Progressing"  # no DaemonSet status yet
    stored = kube.get(al_path("tigera-secure"))
    assert stored["spec"]["logCollection"]["logIntervalSeconds"] == 5  # defaults written back
    assert stored["status"]["state"] == "Progressing"
    assert kube.get(nodeconfig.PATH)["spec"] == {"tproxyMode": "Enabled",
                                                 "policySyncPathPrefix": "/var/run/nodeagent"}
    assert kube.exists("/api/v1/namespaces/ns1")
    for api_version, kind, name, namespaced in render.OWNED:
        if kind == "Deployment" and name == render.SERVER:
            continue  # no LogStorage: the embedded store, a StatefulSet
        assert kube.exists(kube.resource(api_version, kind).path("ns1" if namespaced else None, name))
    # the DaemonSet becomes available -> Ready
    ds_path = "/apis/apps/v1/namespaces/ns1/daemonsets/l7-log-collector"
    kube.objects[ds_path]["metadata"]["generation"] = 1
    kube.objects[ds_path]["status"] = {"observedGeneration": 1, "desiredNumberScheduled": 2,
                                       "numberAvailable": 2, "updatedNumberScheduled": 2}
    assert rec.refresh_status() == "Ready"
    # idempotent: a second reconcile of the same object changes nothing but re-applies
    kube.calls.clear()
    assert rec.reconcile(kube.get(al_path("tigera-secure"))) == "Ready"
    assert not [c for c in kube.calls if c[0] in ("patch", "create", "delete")]


def test_invalid_spec_degrades_without_touching_objects() -> None:
    kube, rec, body = setup({"logCollection": {"collectLogs": "Enabled", "logIntervalSeconds": -1}})
    assert rec.reconcile(body) == "Degraded"
    st = kube.get(al_path("tigera-secure"))["status"]
    assert st["state"] == "Degraded"
    msg = next(c["message"] for c in st["conditions"] if c["type"] == "Degraded")
    assert "logIntervalSeconds must be at least 1 (got -1)" in msg
    assert not [c for c in kube.calls if c[0] in ("apply", "delete")]


def test_disabled_and_teardown_remove_and_disable_tproxy() -> None:
    kube, rec, body = setup({"logCollection": {"collectLogs": "Enabled"}})
    rec.reconcile(body)
    kube.merge_patch(al_path("tigera-secure"), {"spec": {"logCollection": {"collectLogs": "Disabled"}}})
    assert rec.reconcile(kube.get(al_path("tigera-secure"))) == "Disabled"
    assert not kube.exists("/apis/apps/v1/namespaces/ns1/daemonsets/l7-log-collector")
    assert kube.get(nodeconfig.PATH)["spec"]["tproxyMode"] == "Disabled"
    kube.merge_patch(al_path("tigera-secure"), {"spec": {"logCollection": {"collectLogs": "Enabled"}}})
    rec.reconcile(kube.get(al_path("tigera-secure")))
    assert kube.exists("/apis/apps/v1/namespaces/ns1/daemonsets/l7-log-collector")
    rec.teardown("tigera-secure")
    for api_version, kind, name, namespaced in render.OWNED:
        assert not kube.exists(kube.resource(api_version, kind).path("ns1" if namespaced else None, name))
    spec = kube.get(nodeconfig.PATH)["spec"]
    assert spec == {"tproxyMode": "Disabled", "policySyncPathPrefix": "/var/run/nodeagent"}
    assert kube.exists("/api/v1/namespaces/ns1")  # not ours to delete


def test_invalid_node_config_is_reported() -> None:
    kube, rec, body = setup({"logCollection": {"collectLogs": "Enabled"}})
    kube.objects[nodeconfig.PATH] = {**nodeconfig.empty(), "spec": {"tproxyPort": "many"}}
    assert rec.reconcile(body) == "Degraded"
    st = kube.get(al_path("tigera-secure"))["status"]
    msg = next(c["message"] for c in st["conditions"] if c["type"] == "Degraded")
    assert msg.startswith("invalid node-agent configuration: nodeagentconfigurations/default: tproxyPort")


_T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_reconcile_issues_once_and_reuses_across_restarts() -> None:
    kube = MemoryKube()
    body = al({"logCollection": {"collectLogs": "Enabled"}})
    kube.objects[al_path("tigera-secure")] = copy.deepcopy(body)
    kube.objects["/api/v1/nodes/n1"] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                                        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}
    now = [_T0]
    rec = Reconciler(kube, OperatorConfig(namespace="ns1"), clock=lambda: now[0])  # type: ignore[arg-type]
    rec.reconcile(body)
    srv_path = "/api/v1/namespaces/ns1/secrets/l7scope-server-tls"
    ca_path = "/api/v1/namespaces/ns1/secrets/l7scope-ca"
    first = (kube.get(srv_path)["data"], kube.get(ca_path)["data"])
    np = kube.get("/apis/networking.k8s.io/v1/namespaces/ns1/networkpolicies/l7scope-server")
    assert np["spec"]["ingress"][0]["from"][0] == {"ipBlock": {"cidr": "10.0.0.2/32"}}
    # a restarted operator (new Reconciler) 10 days later: nothing is issued again
    now[0] = _T0 + dt.timedelta(days=10)
    rec2 = Reconciler(kube, OperatorConfig(namespace="ns1"), clock=lambda: now[0])  # type: ignore[arg-type]
    kube.calls.clear()
    rec2.reconcile(kube.get(al_path("tigera-secure")))
    assert (kube.get(srv_path)["data"], kube.get(ca_path)["data"]) == first
    assert ("apply", srv_path) not in kube.calls and ("apply", ca_path) not in kube.calls
    # the Service gets a ClusterIP: the certificate is re-issued for it, the CA kept
    svc = "/api/v1/namespaces/ns1/services/l7scope-server"
    kube.objects[svc]["spec"]["clusterIP"] = "10.96.0.10"
    rec2.reconcile(kube.get(al_path("tigera-secure")))
    pair = tls.pair_from_secret(kube.get(srv_path))
    assert pair is not None and kube.get(ca_path)["data"] == first[1]
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.96.0.10", "127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.DNSName)[-1] == "localhost"  # port-forwards verify too
    # a node joins: the policy follows
    kube.objects["/api/v1/nodes/n2"] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"},
                                        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.3"}]}}
    kube.calls.clear()
    rec2.node_changed("n2", kube.objects["/api/v1/nodes/n2"])
    np = kube.get("/apis/networking.k8s.io/v1/namespaces/ns1/networkpolicies/l7scope-server")
    assert [s.get("ipBlock") for s in np["spec"]["ingress"][0]["from"][:2]] == [
        {"cidr": "10.0.0.2/32"}, {"cidr": "10.0.0.3/32"}]
    kube.calls.clear()
    rec2.node_changed("n2", kube.objects["/api/v1/nodes/n2"])  # a heartbeat: no API call
    assert kube.calls == []
    del kube.objects["/api/v1/nodes/n2"]
    rec2.node_changed("n2", None)  # deleted: the policy follows
    np = kube.get("/apis/networking.k8s.io/v1/namespaces/ns1/networkpolicies/l7scope-server")
    assert np["spec"]["ingress"][0]["from"][1] == {
        "namespaceSelector": {}, "podSelector": {"matchLabels": {"l7scope.io/ui-access": "true"}}}
