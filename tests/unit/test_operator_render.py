"""Rendered manifests: the DaemonSet's shape, config hash, overrides; CRDs agree with models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from l7scope.contracts.auth import TOKEN_AUDIENCE
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.operator import crd, render, tls
from l7scope.operator.spec import ApplicationLayerSpec, check

REPO = Path(__file__).resolve().parents[2]


def _spec(**lc: object) -> ApplicationLayerSpec:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled", **lc}})
    assert c.spec is not None, c.errors
    return c.spec


def _by_kind(objs: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {o["kind"]: o for o in objs}


def test_daemonset_shape() -> None:
    objs = _by_kind(render.render(_spec(), render.RenderContext(namespace="ns1", image="img:1")))
    ds = objs["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["name"] == "l7-log-collector" and ds["metadata"]["namespace"] == "ns1"
    assert pod["hostNetwork"] is True and pod["tolerations"] == [{"operator": "Exists"}]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["envoy-proxy", "l7-collector", "l7-node-agent"]
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in pod["containers"]}
    assert mounts["envoy-proxy"]["envoy-logs"] == mounts["l7-collector"]["envoy-logs"] == "/tmp"
    assert mounts["l7-collector"]["policy-sync"] == mounts["l7-node-agent"]["policy-sync"] == "/var/run/nodeagent"
    env = {e["name"]: e.get("value") for e in pod["containers"][1]["env"]}
    assert env["ENVOY_LOG_INTERVAL_SECONDS"] == "5"
    assert env["ENVOY_LOG_REQUESTS_PER_INTERVAL"] == "-1"
    assert env["FELIX_DIAL_TARGET"] == "unix:///var/run/nodeagent/socket"
    envoy_c, *others = pod["containers"]
    for c in others:
        assert c["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Envoy's admin is a unix socket on the pod's own `run` volume, probed by exec
    sock = "unix:/var/run/l7scope/sockets/envoy-admin.sock"
    for probe in ("readinessProbe", "livenessProbe"):
        assert envoy_c[probe]["exec"]["command"] == ["python", "-m", "l7scope.proxy.admin", sock, "/ready"]
    assert all(mounts[c]["run"] == "/var/run/l7scope/sockets" for c in names)
    assert {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    assert all(sock in c["command"] for c in others)  # collector's reopen, node agent's probe
    cm = objs["ConfigMap"]
    envoy = yaml.safe_load(cm["data"]["envoy-config.yaml"])
    assert "static_resources" in envoy
    ports = [lst["address"]["socket_address"]["port_value"] for lst in envoy["static_resources"]["listeners"]]
    assert ports == [16001, 16002]  # services; NodePorts (tproxyPort + 1)
    marks = [f["typed_config"]["mark"] for lst in envoy["static_resources"]["listeners"]
             for f in lst["listener_filters"] if f["name"].endswith("original_src")]
    assert marks == [0x2000, 0x6000]  # upstream mark; with kube-proxy's masquerade bit
    assert envoy["admin"]["address"] == {"pipe": {"path": "/var/run/l7scope/sockets/envoy-admin.sock", "mode": 0o660}}


def test_envoy_config_follows_the_node_settings_port_and_upstream_mark() -> None:
    node = NodeSettings.model_validate({"tproxyPort": 15001, "tproxyUpstreamConnMark": 0x17})
    cm = _by_kind(render.render(_spec(), render.RenderContext(node=node)))["ConfigMap"]
    listener, nodeports = yaml.safe_load(cm["data"]["envoy-config.yaml"])["static_resources"][
        "listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 15001
    assert nodeports["address"]["socket_address"]["port_value"] == 15002
    for lst, mark in ((listener, 0x17), (nodeports, 0x4017)):
        (osrc,) = [f for f in lst["listener_filters"] if f["name"].endswith(".original_src")]
        assert osrc["typed_config"]["mark"] == mark


def test_hash_changes_with_interval_and_node_settings() -> None:
    h = lambda ds: ds["spec"]["template"]["metadata"]["annotations"][render.HASH_ANNOTATION]  # noqa: E731
    ctx = render.RenderContext()
    base = _by_kind(render.render(_spec(), ctx))["DaemonSet"]
    assert h(base) == h(_by_kind(render.render(_spec(), ctx))["DaemonSet"])
    assert h(base) != h(_by_kind(render.render(_spec(logIntervalSeconds=10), ctx))["DaemonSet"])
    moved = render.RenderContext(node=NodeSettings.model_validate({"policySyncPathPrefix": "/run/x"}))
    assert h(base) != h(_by_kind(render.render(_spec(), moved))["DaemonSet"])


def test_overrides_apply_to_named_container() -> None:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"},
                                "l7LogCollectorDaemonSet": {"spec": {"template": {"spec": {"containers": [
                                    {"name": "l7-collector",
                                     "resources": {"limits": {"cpu": "1", "memory": 1000000}},
                                     "readinessProbe": {"periodSeconds": 30}}]}}}}})
    assert c.spec is not None, c.errors
    ds = _by_kind(render.render(c.spec, render.RenderContext()))["DaemonSet"]
    col = ds["spec"]["template"]["spec"]["containers"][1]
    assert col["resources"] == {"limits": {"cpu": "1", "memory": "1000000"}}
    assert col["readinessProbe"]["periodSeconds"] == 30
    assert col["readinessProbe"]["httpGet"]["path"] == "/healthz"  # the handler stays


def test_owner_reference_on_everything_but_namespace() -> None:
    owner = {"apiVersion": "l7scope.io/v1", "kind": "ApplicationLayer", "name": "tigera-secure",
             "uid": "u1", "controller": True, "blockOwnerDeletion": False}
    objs = render.render(_spec(), render.RenderContext(owner=owner))
    assert "ownerReferences" not in objs[0]["metadata"]
    assert all(o["metadata"]["ownerReferences"] == [owner] for o in objs[1:])
    owned = {(o["kind"], o["metadata"]["name"]) for o in objs[1:]}
    # the TLS Secrets and the CA bundle are written by the Reconciler (they hold keys); OWNED
    # holds both server workload kinds, and the default LogStorage (duckdb) renders a StatefulSet
    issued = {("Secret", tls.SERVER_SECRET), ("Secret", tls.CA_SECRET),
              ("ConfigMap", tls.CA_CONFIGMAP)}
    assert owned | issued == {(kind, name) for _, kind, name, _ in render.OWNED} - {("Deployment", render.SERVER)}


def test_node_agents_ship_with_a_projected_token_the_server_checks_with_kubernetes() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render.render(_spec(), render.RenderContext())}
    assert not [k for k in objs if k[0] == "Secret"]  # no shared secret any more
    ds = objs[("DaemonSet", render.DAEMONSET)]["spec"]["template"]["spec"]
    srv = objs[("StatefulSet", render.SERVER)]["spec"]["template"]["spec"]
    token_path = f"{render.TOKEN_DIR}/{render.TOKEN_KEY}"
    agent = next(c for c in ds["containers"] if c["name"] == "l7-node-agent")
    server = srv["containers"][0]
    cmd = server["command"]

    def arg(name: str) -> str:
        return str(cmd[cmd.index(name) + 1])

    assert agent["command"][agent["command"].index("--server-token-file") + 1] == token_path
    assert arg("--auth") == "kubernetes"
    assert arg("--writer-serviceaccount") == f"l7scope-system:{ds['serviceAccountName']}"
    assert arg("--token-audience") == TOKEN_AUDIENCE
    assert "--token-file" not in cmd
    hosts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--allowed-host"]
    assert "l7scope-server.l7scope-system.svc" in hosts
    vol = next(v for v in ds["volumes"] if v["name"] == "api-token")
    [src] = vol["projected"]["sources"]
    assert src["serviceAccountToken"] == {"audience": TOKEN_AUDIENCE, "expirationSeconds": 3600,
                                          "path": render.TOKEN_KEY}
    assert vol["projected"]["defaultMode"] & 0o007 == 0  # not world-readable
    assert {"name": "api-token", "mountPath": render.TOKEN_DIR, "readOnly": True} in agent["volumeMounts"]
    # the server runs as its own account, allowed the reviews and the namespace list, nothing else
    assert srv["serviceAccountName"] == render.SERVER_ROLE
    assert all(v["name"] != "api-token" for v in srv["volumes"])
    role = objs[("ClusterRole", render.SERVER_ROLE)]
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]
    binding = objs[("ClusterRoleBinding", render.SERVER_ROLE)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": render.SERVER_ROLE,
                                    "namespace": "l7scope-system"}]
    assert ("ServiceAccount", render.SERVER_ROLE) in objs


def test_daemonset_state() -> None:
    def ds(gen: int, obs: int, desired: int, avail: int, upd: int) -> dict:  # type: ignore[type-arg]
        return {"metadata": {"generation": gen}, "status": {
            "observedGeneration": obs, "desiredNumberScheduled": desired,
            "numberAvailable": avail, "updatedNumberScheduled": upd}}
    assert render.daemonset_state(None)[0] == "Progressing"
    assert render.daemonset_state(ds(2, 1, 2, 2, 2))[0] == "Progressing"
    assert render.daemonset_state(ds(2, 2, 2, 1, 2))[0] == "Progressing"
    assert render.daemonset_state(ds(2, 2, 2, 2, 1))[0] == "Progressing"
    assert render.daemonset_state(ds(2, 2, 2, 2, 2)) == ("Ready", "DaemonSet l7-log-collector: 2/2 pods available")


def test_crd_files_match_models() -> None:
    for want in crd.all_crds():
        path = REPO / "deploy" / "helm" / "l7scope" / "crds" / crd.file_name(want)
        assert path.read_text() == crd.crd_yaml(want), \
            f"{path} is stale: run `python -m l7scope.operator.crd deploy/helm/l7scope/crds`"


def test_node_crd_lists_every_setting() -> None:
    props = crd.node_agent_configuration_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]
    aliases = {f.alias for f in NodeSettings.model_fields.values()}
    assert set(props) == aliases
    assert props["tproxyMode"]["enum"] == ["Disabled", "Enabled", "EnabledAllServices"]


def test_structural_schema_has_no_refs_or_anyof() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and node.get("additionalProperties") is not False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    for c in crd.all_crds():
        walk(c)


def test_install_yaml_is_the_rendered_chart() -> None:
    from l7scope.operator import chart
    assert (REPO / "deploy" / "install.yaml").read_text() == chart.render_yaml(), \
        "deploy/install.yaml is stale: python -m l7scope.operator.chart > deploy/install.yaml"


def _workloads() -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    """(where, pod spec) of every pod l7scope runs: what the operator renders, and the chart's
    operator Deployment."""
    from l7scope.operator import chart

    out = [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
           for o in render.render(_spec(), render.RenderContext())
           if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")]
    out += [(f"chart {o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
            for o in chart.render() if o["kind"] in ("DaemonSet", "Deployment")]
    assert [w for w, _ in out] == ["DaemonSet/l7-log-collector", "StatefulSet/l7scope-server",
                                   "chart Deployment/l7scope-operator"]
    return out


def test_every_container_is_least_privileged() -> None:
    from kubernetes.utils import parse_quantity

    seen = 0
    for where, pod in _workloads():
        for c in pod["containers"]:
            what = f"{where} {c['name']}"
            sc = c["securityContext"]
            assert sc["capabilities"]["drop"] == ["ALL"], what
            assert sc["allowPrivilegeEscalation"] is False and sc.get("privileged") is False, what
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, what
            assert sc["readOnlyRootFilesystem"] is True, what
            added = sc["capabilities"].get("add", [])
            if c["name"] in ("envoy-proxy", "l7-node-agent"):
                assert added == ["NET_ADMIN"] and sc["runAsUser"] == 0, what
            else:  # the collector, the server, the operator: nothing added, not root
                assert added == [] and sc["runAsNonRoot"] is True, what
                assert sc["runAsUser"] == 10001 == sc["runAsGroup"], what
            if where.startswith("DaemonSet"):  # one group for the sockets the pod shares
                assert sc["runAsGroup"] == render.APP_UID, what
            res = c["resources"]
            for q in ("cpu", "memory"):
                assert parse_quantity(res["requests"][q]) <= parse_quantity(res["limits"][q]), what
            # the root file system is read-only: every place it writes is a volume
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, what
            seen += 1
    assert seen == 5


def test_server_and_operator_pods_meet_pod_security_restricted() -> None:
    allowed_volumes = {"configMap", "emptyDir", "projected", "secret", "downwardAPI",
                       "persistentVolumeClaim", "ephemeral", "csi"}
    for where, pod in _workloads():
        if where.startswith("DaemonSet"):
            continue
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), where
        for v in pod.get("volumes", []):
            assert set(v) - {"name"} <= allowed_volumes, (where, v)
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in pod["containers"]:
            assert not c["securityContext"]["capabilities"].get("add"), where
            assert all(p.get("hostPort") is None for p in c.get("ports", [])), where


def test_namespace_is_labelled_for_what_the_daemonset_needs() -> None:
    from l7scope.operator import chart

    ns = render.render(_spec(), render.RenderContext())[0]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert chart.render()[0]["metadata"]["labels"] == ns["metadata"]["labels"]
    pod = next(p for w, p in _workloads() if w.startswith("DaemonSet"))
    # why it has to be `privileged`: each of these is refused by `baseline`
    assert pod["hostNetwork"] is True
    assert any("hostPath" in v for v in pod["volumes"])
    assert any(c["securityContext"]["capabilities"].get("add") for c in pod["containers"])


def test_ipv6_support_adds_the_ipv6_listener_addresses() -> None:
    def listeners(node: NodeSettings) -> list[dict[str, Any]]:
        cm = _by_kind(render.render(_spec(), render.RenderContext(node=node)))["ConfigMap"]
        out: list[dict[str, Any]] = yaml.safe_load(cm["data"]["envoy-config.yaml"])[
            "static_resources"]["listeners"]
        return out

    for lst in listeners(NodeSettings()):
        assert "additional_addresses" not in lst  # IPv4 only: binds on nodes without IPv6 too
    for lst in listeners(NodeSettings.model_validate({"ipv6Support": True})):
        (extra,) = lst["additional_addresses"]
        assert extra["address"]["socket_address"]["address"] == "::"
