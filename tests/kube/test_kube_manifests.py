"""Every manifest we ship or render, validated by the real API server (server-side dry run),
and the CRD schemas enforcing types."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubeharness import ControlPlane

from l7scope.kube.client import Kube, KubeError
from l7scope.operator import chart, logstorage, netpol, render, tls
from l7scope.operator.spec import check

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane, kube: Kube) -> Iterator[str]:
    ns = f"dry-{uuid.uuid4().hex[:6]}"
    crds = [d for d in chart.render(namespace=ns) if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    yield ns
    kube.delete(f"/api/v1/namespaces/{ns}")


def test_install_manifest_server_dry_run(control_plane: ControlPlane, namespace: str) -> None:
    docs = chart.render(namespace=namespace)
    r = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == len(docs), r.stdout
    assert all("(server dry run)" in x for x in lines), r.stdout


def test_chart_with_every_value_server_dry_run(control_plane: ControlPlane, namespace: str) -> None:
    """The chart's optional values (tools/chartrender, Helm's engine) make objects the API server
    takes: pull secrets, scheduling, resources, the LogStorage and NodeAgentConfiguration specs."""
    docs = chart.render(namespace=namespace, values={
        "fullnameOverride": "l7obs",
        "image": {"repository": "registry.example/l7scope", "tag": "1.0", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "reg-a"}, {"name": "reg-b"}],
        "operator": {
            "logLevel": "debug", "certManagerIssuer": "ClusterIssuer/corp",
            "resources": {"requests": {"cpu": "20m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra",
                             "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}]}},
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/team": "obs"}, "podLabels": {"team": "obs"},
            "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 20000, "fsGroup": 20000,
                                   "seccompProfile": {"type": "RuntimeDefault"}}},
        "logStorage": {"engine": "clickhouse", "clickhouse": {"url": "clickhouse://ch.db:9000"},
                       "server": {"replicas": 2}},
        "nodeAgentConfiguration": {"l7LogsFlushInterval": "2s", "l7LogsFileEnabled": True}})
    docs = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    r = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    assert "deployment.apps/l7obs-operator created (server dry run)" in r.stdout, r.stdout
    assert "logstorage.l7scope.io/default " in r.stdout, r.stdout  # (created or configured)
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == len(docs) and all("(server dry run)" in x for x in lines), r.stdout


def test_shipped_install_yaml_is_the_rendered_chart(control_plane: ControlPlane, kube: Kube,
                                                    namespace: str) -> None:
    assert (REPO / "deploy" / "install.yaml").read_text() == chart.render_yaml(), \
        "deploy/install.yaml is stale: python -m l7scope.operator.chart > deploy/install.yaml"
    # a dry run does not create the namespace the other objects go to
    ns = chart.DEFAULT_NAMESPACE
    made = not kube.exists(f"/api/v1/namespaces/{ns}")
    if made:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        r = control_plane.kubectl("apply", "--dry-run=server", "-f", str(REPO / "deploy" / "install.yaml"))
    finally:
        if made:
            kube.delete(f"/api/v1/namespaces/{ns}")
    assert "deployment.apps/l7scope-operator created (server dry run)" in r.stdout, r.stdout


def test_operator_rendered_objects_server_dry_run(kube: Kube, namespace: str) -> None:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"},
                                "l7LogCollectorDaemonSet": {"spec": {"template": {"spec": {"containers": [
                                    {"name": "envoy-proxy", "resources": {"limits": {"memory": "512Mi"}},
                                     "livenessProbe": {"periodSeconds": 20}}]}}}}})
    assert c.spec is not None, c.errors
    objs = render.render(c.spec, render.RenderContext(namespace=namespace))
    assert objs[0]["kind"] == "Namespace"
    kinds = []
    for obj in objs[1:]:
        answer = kube.apply(obj, field_manager="dry-run-test", dry_run=True)
        assert answer["kind"] == obj["kind"] and answer["metadata"]["name"] == obj["metadata"]["name"]
        kinds.append(obj["kind"])
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet",
                     "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy",
                     "StatefulSet", "Service"]
    # the ClickHouse shape of the server (a Deployment of N replicas with Secret credentials)
    ls = logstorage.check("default", {"engine": "clickhouse", "server": {"replicas": 2},
                                      "clickhouse": {"url": "clickhouse://ch:9000",
                                                     "credentialsSecret": {"name": "ch"}}}).spec
    assert ls is not None
    [dep] = [o for o in render.render(c.spec, render.RenderContext(namespace=namespace, storage=ls))
             if o["kind"] == "Deployment"]
    answer = kube.apply(dep, field_manager="dry-run-test", dry_run=True)
    assert answer["spec"]["replicas"] == 2
    # nothing was created
    assert not kube.exists(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{render.DAEMONSET}")


def test_crd_schema_rejects_wrong_types(control_plane: ControlPlane) -> None:
    bad = """
apiVersion: l7scope.io/v1
kind: ApplicationLayer
metadata: {name: tigera-secure}
spec:
  logCollection: {collectLogs: Yes-please, logIntervalSeconds: five}
"""
    # --validate=false: the API server's own check of our schema, not kubectl's
    r = control_plane.kubectl("apply", "--dry-run=server", "--validate=false", "-f", "-", input=bad,
                              check=False)
    assert r.returncode != 0
    assert "spec.logCollection.collectLogs" in r.stderr and "spec.logCollection.logIntervalSeconds" in r.stderr
    bad_node = """
apiVersion: l7scope.io/v1
kind: NodeAgentConfiguration
metadata: {name: default}
spec: {tproxyMode: Sometimes, tproxyPort: 70000}
"""
    r = control_plane.kubectl("apply", "--dry-run=server", "--validate=false", "-f", "-",
                              input=bad_node, check=False)
    assert r.returncode != 0 and "spec.tproxyMode" in r.stderr and "spec.tproxyPort" in r.stderr


def test_network_policy_and_tls_objects_server_side(kube: Kube, namespace: str) -> None:
    """The server's NetworkPolicy with IPv4 and IPv6 node addresses, and the Secrets and CA
    ConfigMap the operator issues, validated by the real API server (dry run). A policy the
    server would reject (a bad CIDR, a port out of range) is refused, so the check can fail."""
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}})
    assert c.spec is not None
    nodes = [{"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                                       {"type": "InternalIP", "address": "fd00::2"}]}}]
    ctx = render.RenderContext(namespace=namespace, node_cidrs=tuple(netpol.node_addresses(nodes)))
    names = render.server_names(ctx)
    material, _ = tls.ensure(None, None, b"", names, ["10.96.0.10"], dt.datetime.now(dt.UTC))
    objs = render.render(c.spec, ctx)
    np = next(o for o in objs if o["kind"] == "NetworkPolicy")
    answer = kube.apply(np, field_manager="dry-run-test", dry_run=True)
    assert answer["spec"]["ingress"] == np["spec"]["ingress"]
    assert answer["spec"]["podSelector"] == np["spec"]["podSelector"]
    meta = {"namespace": namespace}
    for obj in (tls.ca_secret(material, meta), tls.server_secret(material, meta),
                tls.ca_configmap(material, meta)):
        got = kube.apply(obj, field_manager="dry-run-test", dry_run=True)
        assert got["data"] == obj["data"]
    for bad in ({"ipBlock": {"cidr": "10.0.0.2"}}, {"ipBlock": {"cidr": "300.0.0.0/8"}}):
        broken = {**np, "spec": {**np["spec"], "ingress": [{"from": [bad], "ports": [
            {"protocol": "TCP", "port": 8686}]}]}}
        with pytest.raises(KubeError) as e:
            kube.apply(broken, field_manager="dry-run-test", dry_run=True)
        assert e.value.status == 422, e.value
