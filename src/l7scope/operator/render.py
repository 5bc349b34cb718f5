"""Everything the operator creates for one ApplicationLayer, as plain manifests. Pure.

`render(spec, RenderContext(...))` returns, in apply order:

- Namespace (created when missing, never owned or deleted by the operator);
- ServiceAccount `l7-log-collector`, ClusterRole + ClusterRoleBinding `l7scope-node-agent`
  (the node agent watches pods, Services, EndpointSlices, nodes and its configuration);
- ConfigMap `envoy-config` (key `envoy-config.yaml`, from `l7scope.proxy.bootstrap.render_yaml`);
- DaemonSet `l7-log-collector`: host network, tolerates every taint (a node without it would
  lose the annotated Services' traffic), containers `envoy-proxy`, `l7-collector` and
  `l7-node-agent`; the Policy Sync directory (host path `policySyncPathPrefix`) shared by the
  collector and the node agent; the Envoy log on an emptyDir at `/tmp` shared by Envoy and the
  collector; Envoy's admin on a unix socket in the emptyDir `run` (`/var/run/l7scope/sockets`), so
  nothing on the host network reaches it; readiness/liveness probes on Envoy's admin `/ready`
  (an exec probe: `python -m l7scope.proxy.admin`) and the collector's and node agent's
  `/healthz`; the annotation `l7scope.io/config-hash` on the pod template, a hash of
  everything the pods read at start, so any change rolls them;
- the server: ServiceAccount, ClusterRole + ClusterRoleBinding and a workload + Service
  `l7scope-server` (a StatefulSet with a claim or a Deployment of N replicas, from the
  LogStorage: `logstorage.shape`), run with `--auth kubernetes` (docs/security.md, "Authentication in a
  cluster"): it checks every bearer token with a TokenReview and scopes readers with
  SubjectAccessReviews, so its ClusterRole holds `create` on those two and `list` namespaces,
  nothing else. The node agents ship with a projected token of their own ServiceAccount for the
  audience `l7scope` (TOKEN_AUDIENCE, an hour, renewed by the kubelet; the shipper re-reads
  the file), the one account the server lets write. No shared secret exists.
- TLS and the NetworkPolicy (`_secure`, from operator/tls.py and operator/netpol.py): the
  server serves HTTPS with the pair of Secret `l7scope-server-tls` (probes over HTTPS), the node
  agents ship to `https://l7scope-server.<ns>.svc` verifying it with the CA bundle of ConfigMap
  `l7scope-server-ca`; NetworkPolicy `l7scope-server` admits the server port only from the
  nodes and pods labelled `l7scope.io/ui-access: "true"`. The Secrets themselves are issued by
  `Reconciler` (they hold keys, not rendering), or by cert-manager (a rendered `Certificate`).

Owner references are the caller's business (`owner=`): with one, every object but the
Namespace gets it, so deleting the ApplicationLayer garbage-collects them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from l7scope.contracts import api, install, status
from l7scope.contracts.auth import TOKEN_AUDIENCE
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.operator import netpol, tls
from l7scope.operator.logstorage import DEFAULT, LogStorageSpec, shape
from l7scope.operator.spec import ApplicationLayerSpec, Probe, envoy_settings
from l7scope.proxy.bootstrap import FILE_FLUSH_INTERVAL_MS, render_yaml

DAEMONSET: Final = install.DAEMONSET
SERVICE_ACCOUNT: Final = "l7-log-collector"
CLUSTER_ROLE: Final = "l7scope-node-agent"
CONFIGMAP: Final = "envoy-config"
CONFIGMAP_KEY: Final = "envoy-config.yaml"
SERVER: Final = install.SERVER
SERVER_PORT: Final = install.SERVER_PORT  # l7scope server / observe default
HASH_ANNOTATION: Final = "l7scope.io/config-hash"
SCRAPE_ANNOTATIONS: Final = {"prometheus.io/scrape": "true", "prometheus.io/scheme": "https",
                             "prometheus.io/port": str(SERVER_PORT), "prometheus.io/path": api.METRICS_PATH}
SERVER_ROLE: Final = "l7scope-server"  # ServiceAccount, ClusterRole, ClusterRoleBinding
TOKEN_KEY: Final = "token"
TOKEN_DIR: Final = "/var/run/l7scope/api-token"
TOKEN_EXPIRATION_S: Final = 3600
#: The node agents' credential for the server: a projected ServiceAccount token for the server's
#: audience only (useless against the API server), renewed by the kubelet before it expires.
_TOKEN_VOLUME: Final = {"name": "api-token", "projected": {"defaultMode": 0o440, "sources": [
    {"serviceAccountToken": {"audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_EXPIRATION_S,
                             "path": TOKEN_KEY}}]}}
_TOKEN_MOUNT: Final = {"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True}
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "l7scope-operator"}

RUN_DIR: Final = "/var/run/l7scope/sockets"  # emptyDir shared by the pod's containers
ENVOY_ADMIN: Final = f"unix:{RUN_DIR}/envoy-admin.sock"  # admin never on the host network
COLLECTOR_STATUS_PORT: Final = 16011
NODE_STATUS_PORT: Final = 16012
ENVOY_LOG: Final = "/tmp/envoy.log"
NODE_DATA_DIR: Final = "/var/lib/l7scope/node"
ENVOY_LOG_ROTATE_BYTES: Final = 100 * 1024 * 1024
#: the image's non-root user (Dockerfile `USER`); also the group every container of the
#: DaemonSet runs with, so the sockets and files they share (mode 0660/0640) need no world bits
APP_UID: Final = 10001
#: What each container may do (docs/security.md, "Least privilege"). Envoy needs CAP_NET_ADMIN
#: for its transparent listener (IP_TRANSPARENT), the node agent for nftables and policy
#: routing; measured: either starts with that one capability and fails with none. Both run as
#: uid 0 because Kubernetes gives added capabilities to root processes only.
CAPABILITIES: Final = {"envoy-proxy": ("NET_ADMIN",), "l7-collector": (),
                       "l7-node-agent": ("NET_ADMIN",), "server": ()}
#: (requests, limits) per container; an ApplicationLayer override replaces both, as Calico's
RESOURCES: Final = {
    "envoy-proxy": ({"cpu": "100m", "memory": "128Mi"}, {"cpu": "2", "memory": "1Gi"}),
    "l7-collector": ({"cpu": "50m", "memory": "64Mi"}, {"cpu": "1", "memory": "512Mi"}),
    "l7-node-agent": ({"cpu": "100m", "memory": "128Mi"}, {"cpu": "1", "memory": "512Mi"}),
    "server": ({"cpu": "100m", "memory": "256Mi"}, {"cpu": "2", "memory": "2Gi"}),
}
_RUNTIME_DEFAULT: Final = {"seccompProfile": {"type": "RuntimeDefault"}}
_RUN_MOUNT: Final = {"name": "run", "mountPath": RUN_DIR}
_NODE_NAME_ENV: Final = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}


@dataclass(frozen=True)
class RenderContext:
    namespace: str = "l7scope-system"
    image: str = "ghcr.io/l7scope/l7scope:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    #: Secrets in the namespace the kubelet pulls the image with (the chart's imagePullSecrets)
    image_pull_secrets: tuple[str, ...] = ()
    node: NodeSettings = NodeSettings()
    owner: dict[str, Any] | None = None  # an ownerReferences entry
    #: the server's certificate and the agents' CA bundle (operator/tls.py); its digest rolls
    #: the pods. The TLS wiring itself (mounts, flags, https) is there with or without it.
    tls: tls.Material | None = None
    #: a cert-manager issuer (name, kind): render a Certificate instead of self-issuing
    cert_manager_issuer: tuple[str, str] | None = None
    #: the nodes' InternalIPs as CIDRs: where the node agents connect from (operator/netpol.py)
    node_cidrs: tuple[str, ...] = ()
    storage: LogStorageSpec = DEFAULT  # the LogStorage (absent: its defaults)


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "l7scope", **MANAGED_BY}


def _meta(name: str, ctx: RenderContext, component: str, namespaced: bool = True) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "labels": _labels(component)}
    if namespaced:
        m["namespace"] = ctx.namespace
    if ctx.owner is not None:
        m["ownerReferences"] = [ctx.owner]
    return m


def _pull_secrets(ctx: RenderContext) -> dict[str, Any]:
    return {"imagePullSecrets": [{"name": n} for n in ctx.image_pull_secrets]} if ctx.image_pull_secrets else {}


def config_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _probe(handler: dict[str, Any], override: Probe | None, period: int = 10,
           failure: int = 3, initial: int = 0) -> dict[str, Any]:
    p: dict[str, Any] = {**handler, "initialDelaySeconds": initial, "periodSeconds": period,
                         "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": failure}
    if override is not None:
        p.update(override.model_dump(by_alias=True, exclude_none=True))
    return p


def _http(port: int, path: str) -> dict[str, Any]:
    return {"httpGet": {"host": "127.0.0.1", "port": port, "path": path, "scheme": "HTTP"}}


def security_context(name: str) -> dict[str, Any]:
    """The container's securityContext: no privilege escalation, the runtime's default seccomp
    profile, every capability dropped and only `CAPABILITIES[name]` added back; non-root with a
    read-only root file system unless it needs a capability (then uid 0, still read-only)."""
    add = CAPABILITIES[name]
    caps: dict[str, Any] = {"drop": ["ALL"], **({"add": list(add)} if add else {})}
    sc: dict[str, Any] = {"allowPrivilegeEscalation": False, "privileged": False,
                          "capabilities": caps, "readOnlyRootFilesystem": True,
                          **_RUNTIME_DEFAULT}
    if add:
        sc |= {"runAsUser": 0, "runAsGroup": APP_UID}
    else:
        sc |= {"runAsNonRoot": True, "runAsUser": APP_UID, "runAsGroup": APP_UID}
    return sc


def resources(name: str) -> dict[str, Any]:
    requests, limits = RESOURCES[name]
    return {"requests": dict(requests), "limits": dict(limits)}


def _container(spec: ApplicationLayerSpec, ctx: RenderContext, name: str, command: list[str],
               handler: dict[str, Any], *, env: list[dict[str, Any]],
               mounts: list[dict[str, Any]]) -> dict[str, Any]:
    ov = spec.container_override(name)
    res = resources(name)
    if ov is not None and ov.resources is not None:
        res = {k: {q: str(v) for q, v in vals.items()}
               for k, vals in ov.resources.model_dump(exclude_none=True).items()}
    c: dict[str, Any] = {
        "name": name, "image": ctx.image, "imagePullPolicy": ctx.image_pull_policy,
        "command": command, "env": env, "volumeMounts": mounts,
        "securityContext": security_context(name), "resources": res,
        "readinessProbe": _probe(handler, ov.readiness_probe if ov else None, period=5),
        "livenessProbe": _probe(handler, ov.liveness_probe if ov else None, period=10,
                                failure=6, initial=10),
    }
    return c


def envoy_config_yaml(spec: ApplicationLayerSpec, ctx: RenderContext) -> str:
    return render_yaml(envoy_settings(spec, tproxy_port=ctx.node.tproxy_port,
                                      admin_address=ENVOY_ADMIN,
                                      original_src_mark=ctx.node.tproxy_upstream_conn_mark,
                                      ipv6=ctx.node.ipv6_support, detail=ctx.node.l7_detail))


def daemonset(spec: ApplicationLayerSpec, ctx: RenderContext, envoy_yaml: str) -> dict[str, Any]:
    prefix = ctx.node.policy_sync_path_prefix
    log_dir = ctx.node.l7_logs_file_directory
    server_url = f"https://{SERVER}.{ctx.namespace}.svc:{SERVER_PORT}"
    # the collector's request-detail thresholds: the same l7Detail the node agents read
    detail_json = json.dumps(ctx.node.l7_detail.model_dump(mode="json", by_alias=True), sort_keys=True)
    envoy = _container(
        spec, ctx, "envoy-proxy",
        ["envoy", "-c", f"/etc/envoy/{CONFIGMAP_KEY}", "--log-level", "warn",
         "--disable-hot-restart", "--file-flush-interval-msec", str(FILE_FLUSH_INTERVAL_MS)],
        # admin is a unix socket: an exec probe (stdlib only, ~0.1 s) instead of httpGet
        {"exec": {"command": ["python", "-m", "l7scope.proxy.admin", ENVOY_ADMIN, "/ready"]}},
        env=[{"name": "ENVOY_UID", "value": "0"}, {"name": "ENVOY_GID", "value": "0"}],
        mounts=[{"name": "envoy-config", "mountPath": "/etc/envoy", "readOnly": True},
                {"name": "envoy-logs", "mountPath": "/tmp"}, _RUN_MOUNT])
    collector = _container(
        spec, ctx, "l7-collector",
        ["l7scope", "collector", "--envoy-log", ENVOY_LOG,
         "--status-addr", f"127.0.0.1:{COLLECTOR_STATUS_PORT}",
         # the log lives on an emptyDir: rotate it (Envoy reopens it through its admin API)
         "--envoy-admin", ENVOY_ADMIN, "--rotate-bytes", str(ENVOY_LOG_ROTATE_BYTES)],
        _http(COLLECTOR_STATUS_PORT, status.HEALTHZ_PATH),
        env=[{"name": "LOG_LEVEL", "value": "Info"}, _NODE_NAME_ENV,
             {"name": "FELIX_DIAL_TARGET", "value": f"unix://{prefix.rstrip('/')}/socket"},
             {"name": "ENVOY_LOG_INTERVAL_SECONDS", "value": str(spec.log_interval_seconds)},
             {"name": "ENVOY_LOG_REQUESTS_PER_INTERVAL", "value": str(spec.log_requests_per_interval)},
             {"name": "L7SCOPE_DETAIL", "value": detail_json}],
        mounts=[{"name": "envoy-logs", "mountPath": "/tmp"}, _RUN_MOUNT,
                {"name": "policy-sync", "mountPath": prefix}])
    node_agent = _container(
        spec, ctx, "l7-node-agent",
        ["l7scope", "node", "--kube", "--node-name", "$(NODE_NAME)", "--server", server_url,
         "--server-token-file", f"{TOKEN_DIR}/{TOKEN_KEY}",
         "--envoy-admin", ENVOY_ADMIN,
         "--status-addr", f"127.0.0.1:{NODE_STATUS_PORT}", "--data-dir", NODE_DATA_DIR,
         # the collector's counters reach Prometheus through the server (contracts/nodestats.py)
         "--collector-stats-url", f"http://127.0.0.1:{COLLECTOR_STATUS_PORT}{status.STATS_PATH}"],
        _http(NODE_STATUS_PORT, status.HEALTHZ_PATH),
        env=[_NODE_NAME_ENV],
        mounts=[{"name": "policy-sync", "mountPath": prefix}, _RUN_MOUNT,
                {"name": "l7-logs", "mountPath": log_dir},
                {"name": "node-data", "mountPath": NODE_DATA_DIR}, _TOKEN_MOUNT,
                {"name": "agent-tmp", "mountPath": "/tmp"}])
    template_hash = config_hash(envoy_yaml, spec.log_interval_seconds,
                                spec.log_requests_per_interval, prefix, log_dir, ctx.image,
                                detail_json)
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": _meta(DAEMONSET, ctx, DAEMONSET),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": DAEMONSET}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": _labels(DAEMONSET),
                             "annotations": {HASH_ANNOTATION: template_hash}},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    **_pull_secrets(ctx),
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # Absent on a node, the annotated Services' captured traffic would break there.
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": dict(_RUNTIME_DEFAULT),
                    "containers": [envoy, collector, node_agent],
                    "volumes": [
                        {"name": "envoy-config", "configMap": {"name": CONFIGMAP}},
                        {"name": "envoy-logs", "emptyDir": {}},
                        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {"name": "agent-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        {"name": "policy-sync", "hostPath": {"path": prefix, "type": "DirectoryOrCreate"}},
                        {"name": "l7-logs", "hostPath": {"path": log_dir, "type": "DirectoryOrCreate"}},
                        # the node agent's spool: records not yet shipped survive a pod restart
                        {"name": "node-data", "hostPath": {"path": NODE_DATA_DIR, "type": "DirectoryOrCreate"}},
                        _TOKEN_VOLUME,
                    ],
                },
            },
        },
    }


def node_agent_rbac(ctx: RenderContext) -> list[dict[str, Any]]:
    watch = ["get", "list", "watch"]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": _meta(CLUSTER_ROLE, ctx, DAEMONSET, namespaced=False),
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "services", "endpoints", "nodes"], "verbs": watch},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch},
            {"apiGroups": ["l7scope.io"], "resources": ["nodeagentconfigurations"], "verbs": watch},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": _meta(CLUSTER_ROLE, ctx, DAEMONSET, namespaced=False),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ctx.namespace}],
    }
    return [role, binding]


def server_names(ctx: RenderContext) -> list[str]:
    """The names the server's Service is reached by (its Host allow-list besides IPs)."""
    base = f"{SERVER}.{ctx.namespace}"
    return [SERVER, base, f"{base}.svc", f"{base}.svc.cluster.local"]


#: What `--auth kubernetes` asks the API (server/kubeauth.py), and nothing more.
SERVER_RULES: Final = (
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
)


def server_cluster_role(ctx: RenderContext) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(SERVER_ROLE, ctx, SERVER, namespaced=False),
            "rules": [dict(r) for r in SERVER_RULES]}


def server_rbac(ctx: RenderContext) -> list[dict[str, Any]]:
    """The server's ServiceAccount, ClusterRole and ClusterRoleBinding."""
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVER_ROLE, ctx, SERVER)}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": _meta(SERVER_ROLE, ctx, SERVER, namespaced=False),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SERVER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": SERVER_ROLE, "namespace": ctx.namespace}],
    }
    return [sa, server_cluster_role(ctx), binding]


def server(ctx: RenderContext) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": SERVER}
    probe = {"httpGet": {"path": api.HEALTHZ_PATH, "port": SERVER_PORT}, "periodSeconds": 10,
             "timeoutSeconds": 5, "failureThreshold": 3}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(SERVER, ctx, SERVER),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one writer of the embedded store
            "selector": {"matchLabels": labels},
            "template": {
                # the conventional scrape annotations: /metrics needs a cluster-wide reader's
                # bearer token (docs/metrics.md has the Prometheus job)
                "metadata": {"labels": _labels(SERVER), "annotations": dict(SCRAPE_ANNOTATIONS)},
                "spec": {
                    # meets Pod Security `restricted`: non-root, nothing added, read-only root
                    "securityContext": {"runAsNonRoot": True, "runAsUser": APP_UID,
                                        "runAsGroup": APP_UID, "fsGroup": APP_UID,
                                        **_RUNTIME_DEFAULT},
                    "containers": [{
                        "name": "server", "image": ctx.image, "imagePullPolicy": ctx.image_pull_policy,
                        "command": ["l7scope", "server", "--host", "0.0.0.0", "--port", str(SERVER_PORT),
                                    "--data-dir", "/var/lib/l7scope", "--auth", "kubernetes",
                                    "--writer-serviceaccount", f"{ctx.namespace}:{SERVICE_ACCOUNT}",
                                    "--token-audience", TOKEN_AUDIENCE,
                                    *(a for h in server_names(ctx) for a in ("--allowed-host", h))],
                        "env": [{"name": "HOME", "value": "/tmp"}],
                        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
                        "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6},
                        "resources": resources("server"),
                        "securityContext": security_context("server"),
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/l7scope"},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    # its own token (in-cluster credentials) for the TokenReviews and SARs
                    "serviceAccountName": SERVER_ROLE,
                    **_pull_secrets(ctx),
                    "volumes": [{"name": "data", "emptyDir": {}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(SERVER, ctx, SERVER),
        "spec": {"selector": labels,
                 "ports": [{"name": "http", "port": SERVER_PORT, "targetPort": SERVER_PORT,
                            "protocol": "TCP"}]},  # server-side apply needs every list-map key
    }
    # the LogStorage decides the workload: StatefulSet + claim (duckdb) or N replicas (clickhouse)
    return [shape(deployment, ctx.storage), service]


#: The DaemonSet needs the host network, host paths and CAP_NET_ADMIN: only Pod Security
#: `privileged` admits that (`baseline` forbids all three). The server and the operator meet
#: `restricted` (see docs/security.md).
NAMESPACE_LABELS: Final = {"app.kubernetes.io/part-of": "l7scope",
                           "pod-security.kubernetes.io/enforce": "privileged"}


def namespace(ctx: RenderContext) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ctx.namespace, "labels": dict(NAMESPACE_LABELS)}}


def render(spec: ApplicationLayerSpec, ctx: RenderContext) -> list[dict[str, Any]]:
    """Every object for this spec, in apply order (see module doc). The Namespace is first."""
    envoy_yaml = envoy_config_yaml(spec, ctx)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": _meta(CONFIGMAP, ctx, DAEMONSET),
                 "data": {CONFIGMAP_KEY: envoy_yaml}}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": _meta(SERVICE_ACCOUNT, ctx, DAEMONSET)}
    ds, workloads = daemonset(spec, ctx, envoy_yaml), server(ctx)
    extra = _secure(ctx, ds, workloads)
    return [namespace(ctx), sa, *node_agent_rbac(ctx), configmap, ds, *server_rbac(ctx),
            *extra, *workloads]


def _secure(ctx: RenderContext, ds: dict[str, Any], workloads: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """TLS between the node agents and the server, and the server's NetworkPolicy (hooks into
    operator/tls.py and operator/netpol.py). Returns the objects to apply before the server."""
    digest = ctx.tls.digest() if ctx.tls is not None else ""
    tls.apply_node_agent(ds, "l7-node-agent", digest, from_secret=ctx.cert_manager_issuer is not None)
    server_pod = next(w for w in workloads if w["kind"] in ("Deployment", "StatefulSet"))
    tls.apply_server(server_pod, "server", digest)
    meta = _meta(SERVER, ctx, SERVER)
    out = [netpol.network_policy(meta, server_pod["spec"]["selector"]["matchLabels"], SERVER_PORT,
                                 list(ctx.node_cidrs))]
    if ctx.cert_manager_issuer is not None:
        out.append(tls.certificate(*ctx.cert_manager_issuer,
                                   [*server_names(ctx), *tls.PORT_FORWARD_NAMES],
                                   list(tls.PORT_FORWARD_IPS), meta))
    return out


#: (apiVersion, kind, name, namespaced) of everything render() makes except the Namespace;
#: what the operator deletes when the ApplicationLayer goes away or log collection is disabled.
OWNED: Final = (
    ("apps/v1", "DaemonSet", DAEMONSET, True),
    ("v1", "ConfigMap", CONFIGMAP, True),
    ("networking.k8s.io/v1", "NetworkPolicy", netpol.NAME, True),
    ("v1", "ConfigMap", tls.CA_CONFIGMAP, True),
    ("v1", "Secret", tls.SERVER_SECRET, True),
    ("v1", "Secret", tls.CA_SECRET, True),
    ("apps/v1", "Deployment", SERVER, True),
    ("apps/v1", "StatefulSet", SERVER, True),
    ("v1", "Service", SERVER, True),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", SERVER_ROLE, False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", SERVER_ROLE, False),
    ("v1", "ServiceAccount", SERVER_ROLE, True),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", CLUSTER_ROLE, False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", CLUSTER_ROLE, False),
    ("v1", "ServiceAccount", SERVICE_ACCOUNT, True),
)


def nodes_ready(ds: dict[str, Any] | None) -> str | None:
    """`available/desired` pods of the collector DaemonSet (the status' nodesReady)."""
    if ds is None:
        return None
    st = ds.get("status") or {}
    return f"{int(st.get('numberAvailable') or 0)}/{int(st.get('desiredNumberScheduled') or 0)}"


def daemonset_state(ds: dict[str, Any] | None) -> tuple[str, str]:
    """(state, message) of the collector DaemonSet: Ready when every scheduled pod runs the
    current template and is available."""
    if ds is None:
        return "Progressing", f"DaemonSet {DAEMONSET} not created yet"
    meta, st = ds.get("metadata") or {}, ds.get("status") or {}
    desired = int(st.get("desiredNumberScheduled") or 0)
    available = int(st.get("numberAvailable") or 0)
    updated = int(st.get("updatedNumberScheduled") or 0)
    observed = int(st.get("observedGeneration") or 0)
    if observed < int(meta.get("generation") or 0):
        return "Progressing", f"DaemonSet {DAEMONSET}: update not observed yet"
    if desired == 0:
        return "Progressing", f"DaemonSet {DAEMONSET}: no node to run on yet"
    if available >= desired and updated >= desired:
        return "Ready", f"DaemonSet {DAEMONSET}: {available}/{desired} pods available"
    return "Progressing", (f"DaemonSet {DAEMONSET}: {available}/{desired} pods available, "
                           f"{updated}/{desired} updated")
