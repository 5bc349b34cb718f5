"""The operator's RBAC from deploy/helm/l7scope, bound to its real ServiceAccount and used with
that account's own token (TokenRequest): it can do what reconcile does, in its own namespace
and on the objects it renders by name, and nothing else of what it could before."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubeharness
import pytest
import yaml
from kubeharness import ControlPlane

from l7scope.kube.client import Kube, KubeError, connect
from l7scope.operator import chart, render, tls
from l7scope.operator.reconcile import OperatorConfig, Reconciler
from l7scope.operator.spec import check

pytestmark = pytest.mark.kube

SA = "l7scope-operator"


@dataclass
class Installed:
    cp: ControlPlane
    ns: str
    other_ns: str
    admin: Kube
    operator: Kube  # with the operator ServiceAccount's token
    docs: list[dict[str, Any]]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, kube: Kube,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    ns, other = f"rbac-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    docs = chart.render(namespace=ns)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    # everything of the chart, its own Deployment too (never scheduled: no image here)
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [d for d in docs if d["kind"] != "CustomResourceDefinition"]))
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    kc = kubeharness.service_account_kubeconfig(control_plane, kube, ns, SA,
                                                tmp_path_factory.mktemp("rbac") / "sa.kubeconfig")
    op = connect(str(kc))
    try:
        yield Installed(control_plane, ns, other, kube, op, docs)
    finally:
        op.close()
        for name in ("victim-" + ns, render.CLUSTER_ROLE):
            kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{render.CLUSTER_ROLE}")
        for n in (ns, other):
            kube.delete(f"/api/v1/namespaces/{n}")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{SA}")
        kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{SA}")


def _forbidden(call: Callable[[], Any]) -> KubeError:
    with pytest.raises(KubeError) as e:
        call()
    assert e.value.status == 403, e.value
    return e.value


def _rendered(ns: str) -> list[dict[str, Any]]:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}})
    assert c.spec is not None
    return render.render(c.spec, render.RenderContext(namespace=ns))


def test_operator_rbac_is_a_role_in_its_namespace(installed: Installed) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in installed.docs}
    assert ("Role", SA) in kinds and ("RoleBinding", SA) in kinds
    (cluster_role,) = [d for d in installed.docs if d["kind"] == "ClusterRole"]
    namespaced_kinds = {"daemonsets", "deployments", "configmaps", "serviceaccounts", "events"}
    for rule in cluster_role["rules"]:
        assert not namespaced_kinds & set(rule["resources"]), rule
        if set(rule["verbs"]) & {"patch", "update", "delete"} and rule["apiGroups"] != ["l7scope.io"]:
            assert rule.get("resourceNames"), rule  # cluster-scoped writes only by name


def test_operator_can_apply_everything_reconcile_applies(installed: Installed) -> None:
    op = installed.operator
    assert op.exists(f"/api/v1/namespaces/{installed.ns}")  # reconcile's namespace check
    # the cluster-scoped pairs for real (a binding's dry run needs its role to exist; creating the
    # server's ClusterRole passes the escalation check only if the operator holds its rules) ...
    ctx = render.RenderContext(namespace=installed.ns)
    rbac = [*render.node_agent_rbac(ctx),
            *(o for o in render.server_rbac(ctx) if o["kind"] != "ServiceAccount")]
    for obj in rbac:
        op.apply(obj, field_manager="rbac-test")
        res = op.resource(obj["apiVersion"], obj["kind"])
        op.merge_patch(res.path(None, obj["metadata"]["name"]), {"metadata": {"labels": {"t": "1"}}})
    # ... then every rendered object as reconcile applies it (dry run) ...
    for obj in _rendered(installed.ns)[1:]:
        answer = op.apply(obj, field_manager="rbac-test", dry_run=True)
        assert (answer["kind"], answer["metadata"]["name"]) == (obj["kind"], obj["metadata"]["name"])
    # ... and teardown's deletes
    for obj in reversed(rbac):
        res = op.resource(obj["apiVersion"], obj["kind"])
        assert op.delete(res.path(None, obj["metadata"]["name"]))


def test_operator_cannot_touch_cluster_roles_it_does_not_own(installed: Installed) -> None:
    admin, op = installed.admin, installed.operator
    victim = "victim-" + installed.ns
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{victim}"
    admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": victim},
                  "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    _forbidden(lambda: op.delete(path))
    _forbidden(lambda: op.merge_patch(path, {"rules": []}))
    _forbidden(lambda: op.get(path))
    assert admin.exists(path)
    # the operator's own ClusterRole: not even it may change its permissions
    _forbidden(lambda: op.merge_patch(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{SA}",
                                      {"rules": []}))
    # create cannot be limited by name, but escalation is checked: no role with more than it
    # holds, no binding of a role it does not hold (cluster-admin)
    err = _forbidden(lambda: op.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "escalate-" + installed.ns},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))
    assert "escalat" in str(err)
    _forbidden(lambda: op.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bind-" + installed.ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": installed.ns}]}))


def test_operator_cannot_write_outside_its_namespace_or_objects(installed: Installed) -> None:
    op, ns, other = installed.operator, installed.ns, installed.other_ns
    (server, _service) = render.server(render.RenderContext(namespace=other))
    _forbidden(lambda: op.create(server))
    _forbidden(lambda: op.apply(server, field_manager="rbac-test"))
    ds = next(o for o in _rendered(other) if o["kind"] == "DaemonSet")
    _forbidden(lambda: op.apply(ds, field_manager="rbac-test", dry_run=True))
    _forbidden(lambda: op.list(f"/apis/apps/v1/namespaces/{other}/deployments"))
    # in its own namespace, only what it renders: not its own Deployment, no Secrets
    own = f"/apis/apps/v1/namespaces/{ns}/deployments/l7scope-operator"
    assert installed.admin.exists(own)
    _forbidden(lambda: op.merge_patch(own, {"spec": {"replicas": 2}}))
    _forbidden(lambda: op.delete(own))
    _forbidden(lambda: op.list(f"/api/v1/namespaces/{ns}/secrets"))
    _forbidden(lambda: op.get(f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"))
    _forbidden(lambda: op.create({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": "new-" + ns}}))
    _forbidden(lambda: op.get(f"/api/v1/namespaces/{other}"))


def test_cluster_scoped_create_is_what_server_side_apply_needs(installed: Installed,
                                                               tmp_path: Path) -> None:
    """Why `create` of ClusterRoles stays (unlimited by name): server-side apply of an object
    that does not exist yet is authorized as create (checked here with an account that has
    patch by name but no create)."""
    admin, ns = installed.admin, installed.ns
    sa = "apply-probe"
    admin.create({"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": {"name": sa, "namespace": ns}})
    name = "probe-" + ns
    admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": {"name": sa, "namespace": ns},
                  "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                             "resourceNames": [name], "verbs": ["get", "patch", "update"]}]})
    admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": sa, "namespace": ns},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                  "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})
    probe = connect(str(kubeharness.service_account_kubeconfig(
        installed.cp, admin, ns, sa, tmp_path / "probe.kubeconfig")))
    try:
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": name, "namespace": ns}, "data": {"a": "1"}}
        _forbidden(lambda: probe.apply(cm, field_manager="rbac-test"))
        admin.create(cm)
        probe.apply({**cm, "data": {"a": "2"}}, field_manager="rbac-test")  # patch by name: fine
        assert admin.get(f"/api/v1/namespaces/{ns}/configmaps/{name}")["data"] == {"a": "2"}
    finally:
        probe.close()


def test_operator_issues_its_tls_secrets_and_reads_no_other(installed: Installed) -> None:
    """The Reconciler's TLS step under the operator's own token: it creates the CA and server
    Secrets and the CA ConfigMap (by name), re-reads them on a second run without writing, and
    cannot read a Secret it does not own."""
    op, admin, ns = installed.operator, installed.admin, installed.ns
    rec = Reconciler(op, OperatorConfig(namespace=ns))
    ctx = render.RenderContext(namespace=ns)
    first = rec._ensure_tls(ctx, ["10.96.0.10"])
    assert first is not None and first.server is not None
    srv = admin.get(f"/api/v1/namespaces/{ns}/secrets/{tls.SERVER_SECRET}")
    assert srv["type"] == "kubernetes.io/tls" and tls.pair_from_secret(srv) == first.server
    ca = admin.get(f"/api/v1/namespaces/{ns}/secrets/{tls.CA_SECRET}")
    assert tls.ca_from_secret(ca) == first.ca
    cm = admin.get(f"/api/v1/namespaces/{ns}/configmaps/{tls.CA_CONFIGMAP}")
    assert cm["data"]["ca.crt"].encode() == first.bundle_pem
    again = Reconciler(op, OperatorConfig(namespace=ns))._ensure_tls(ctx, ["10.96.0.10"])
    assert again == first  # a restarted operator reuses them
    assert admin.get(f"/api/v1/namespaces/{ns}/secrets/{tls.SERVER_SECRET}")["metadata"][
        "resourceVersion"] == srv["metadata"]["resourceVersion"]
    admin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "foreign", "namespace": ns},
                  "stringData": {"k": "v"}})
    _forbidden(lambda: op.get(f"/api/v1/namespaces/{ns}/secrets/foreign"))
    _forbidden(lambda: op.get(f"/api/v1/namespaces/{installed.other_ns}/secrets/{tls.CA_SECRET}"))
