"""`l7scope status --kubeconfig`: the same picture from the Kubernetes API.

Per node, the `l7-log-collector` pod's containers (`envoy-proxy`, `l7-collector`,
`l7-node-agent`) give Envoy, collector and node agent readiness (their readiness probes are the
same `/ready` and `/healthz` endpoints the local mode asks); a node the DaemonSet should run on
but has no pod is reported unhealthy. The annotated Services are listed from the API; the server
is the `l7scope-server` StatefulSet or Deployment (and, with `--server URL`, its own `/healthz` and status).

The counters are not available in this mode: the status ports listen on each node's loopback
(host network), which the API server's pod proxy cannot reach.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any

from l7scope.contracts.demo_state import ServerPart, State
from l7scope.contracts.install import DAEMONSET, SERVER
from l7scope.kube.client import KubeError, connect
from l7scope.status.probe import PartStatus, probe_all

ANNOTATIONS = ("projectcalico.org/l7-logging", "l7scope.io/logging")


class ClusterError(RuntimeError):
    pass


CONTAINERS = {"envoy-proxy": "envoy", "l7-collector": "collector", "l7-node-agent": "node-agent"}


def _container_state(cs: dict[str, Any]) -> str:
    state = cs.get("state") or {}
    if "running" in state:
        return "running, ready" if cs.get("ready") else "running, not ready"
    for key in ("waiting", "terminated"):
        if key in state:
            reason = (state[key] or {}).get("reason") or key
            return f"{key}: {reason}"
    return "unknown"


def pod_parts(pod: dict[str, Any]) -> list[PartStatus]:
    """One PartStatus per container of an l7-log-collector pod (pure)."""
    node = str((pod.get("spec") or {}).get("nodeName") or "?")
    name = str((pod.get("metadata") or {}).get("name") or "?")
    statuses = {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or []}
    out = []
    for cname, part in CONTAINERS.items():
        cs = statuses.get(cname)
        st = PartStatus(node=node, part=part, addr=f"pod/{name}/{cname}")
        if cs is None:
            st.state = f"no container status (pod phase {(pod.get('status') or {}).get('phase', '?')})"
        else:
            st.healthy = bool(cs.get("ready"))
            st.state = _container_state(cs)
            restarts = int(cs.get("restartCount") or 0)
            if restarts:
                st.warnings.append(f"{restarts} restarts")
        out.append(st)
    return out


def nodes_without_pod(ds: dict[str, Any], nodes: list[dict[str, Any]], with_pod: set[Any]) -> list[str]:
    """Nodes the DaemonSet targets (its nodeSelector) that have no pod of it (pure)."""
    selector = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    out = []
    for n in nodes:
        meta = n.get("metadata") or {}
        labels = meta.get("labels") or {}
        if all(labels.get(k) == v for k, v in selector.items()) and meta.get("name") not in with_pod:
            out.append(str(meta.get("name")))
    return out


def annotated(services: list[dict[str, Any]]) -> list[str]:
    out = []
    for s in services:
        meta = s.get("metadata") or {}
        ann = meta.get("annotations") or {}
        if any(str(ann.get(k, "")).lower() == "true" for k in ANNOTATIONS):
            out.append(f"{meta.get('namespace')}/{meta.get('name')}")
    return sorted(out)


def cluster_status(kubeconfig: str | None, namespace: str, server_url: str | None, timeout: float,
                   context: str | None = None, *, token: str | None = None,
                   verify: ssl.SSLContext | bool = True
                   ) -> tuple[list[PartStatus], dict[str, list[str]], list[str]]:
    # A kubeconfig with insecure-skip-tls-verify is the user's explicit choice (kubectl does not
    # warn either): keep urllib3's per-request warning out of the report.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        return _cluster_status(kubeconfig, namespace, server_url, timeout, context, token, verify)


def _cluster_status(kubeconfig: str | None, namespace: str, server_url: str | None, timeout: float,
                    context: str | None, token: str | None, verify: ssl.SSLContext | bool
                    ) -> tuple[list[PartStatus], dict[str, list[str]], list[str]]:
    try:
        kube = connect(kubeconfig, in_cluster=False, context=context)
    except KubeError as e:
        raise ClusterError(str(e)) from None
    notes: list[str] = ["counters are not available from the Kubernetes API (status ports listen "
                        "on each node's loopback); run `l7scope status` on a node for them"]
    parts: list[PartStatus] = []
    try:
        try:
            ds = kube.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{DAEMONSET}")
        except KubeError as e:
            if e.status != 404:
                raise
            ds = None
            parts.append(PartStatus(node="-", part=DAEMONSET, addr=f"daemonset/{DAEMONSET}",
                                    state=f"not found in namespace {namespace} (is an ApplicationLayer "
                                          "with collectLogs: Enabled applied?)"))
        pods, _ = kube.list(f"/api/v1/namespaces/{namespace}/pods",
                            labelSelector=f"app.kubernetes.io/name={DAEMONSET}")
        nodes, _ = kube.list("/api/v1/nodes")
        with_pod = set()
        for pod in pods:
            parts.extend(pod_parts(pod))
            with_pod.add((pod.get("spec") or {}).get("nodeName"))
        if ds is not None:
            for name in nodes_without_pod(ds, nodes, with_pod):
                parts.append(PartStatus(node=name, part=DAEMONSET, addr="-",
                                        state=f"no {DAEMONSET} pod on this node"))
        services, _ = kube.list("/api/v1/services")
        # the embedded store runs as a StatefulSet, a ClickHouse-backed one as a Deployment
        # (operator/logstorage.py)
        for kind in ("statefulset", "deployment"):
            try:
                workload = kube.get(f"/apis/apps/v1/namespaces/{namespace}/{kind}s/{SERVER}")
            except KubeError as e:
                if e.status != 404:
                    raise
                continue
            ready = int((workload.get("status") or {}).get("readyReplicas") or 0)
            want = int((workload.get("spec") or {}).get("replicas") or 1)
            parts.append(PartStatus(node="-", part="server", addr=f"{kind}/{SERVER}",
                                    healthy=ready >= want, state=f"{ready}/{want} ready"))
            break
        else:
            if server_url is None:
                parts.append(PartStatus(node="-", part="server", addr=f"statefulset/{SERVER}",
                                        state=f"not found in {namespace}"))
    except KubeError as e:
        raise ClusterError(f"the Kubernetes API answered: {e}") from None
    finally:
        kube.close()
    if server_url:
        parts.extend(probe_all(State(server=ServerPart(url=server_url)), timeout=timeout,
                               token=token, verify=verify))
    return parts, {"*": annotated(services)}, notes
