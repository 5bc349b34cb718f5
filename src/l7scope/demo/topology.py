"""The demo cluster's plan: which pod runs where, with which address, and the Kubernetes YAML
the node agents read. Pure: names and addresses in, plain data and dicts out.

Pods are spread over the simulated nodes round robin (the load generator included); pod names
are generateName-style (`cartservice-5c8d7f9b4-x2k4p`), so the node agent aggregates them as
`cartservice-5c8d7f9b4-*` like Calico does. Every Service is annotated
`projectcalico.org/l7-logging: "true"`, as in the workshop. The workshop annotates the ten
backends; the demo also annotates `frontend`, so the shoppers' page views show in the HTTP tab.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Final

from l7scope.demo.shop import catalog

NAMESPACE: Final = "default"
ANNOTATION: Final = "projectcalico.org/l7-logging"
NODES: Final = ("node-a", "node-b")


@dataclass(frozen=True)
class PodPlan:
    app: str  # Service (or loadgenerator) it belongs to
    name: str  # Kubernetes pod name
    generate_name: str
    node: str


@dataclass(frozen=True)
class ServicePlan:
    svc: catalog.ShopService
    port: int  # the port clients dial (the Service port; moved up in --no-netns, see below)


def _suffix(rng: random.Random, n: int, alphabet: str = "bcdfghjklmnpqrstvwxz2456789") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def plan_pods(rng: random.Random, nodes: tuple[str, ...] = NODES) -> list[PodPlan]:
    """One pod per Service plus the load generator, spread over `nodes`."""
    apps = [s.name for s in catalog.SERVICES] + [catalog.LOADGEN]
    out = []
    for i, app in enumerate(apps):
        gen = f"{app}-{rng.choice('5678')}{_suffix(rng, 8, string.hexdigits[:16])}-"
        out.append(PodPlan(app, gen + _suffix(rng, 5), gen, nodes[i % len(nodes)]))
    return out


def service_port(svc: catalog.ShopService, unprivileged: bool) -> int:
    """The Service port clients dial. Without root (`--no-netns`) ports below 1024 cannot be
    bound, so they move up by 8000 (frontend 80 -> 8080)."""
    return svc.port + 8000 if unprivileged and svc.port < 1024 else svc.port


def inventory(pods: list[PodPlan], pod_ips: dict[str, str], vips: dict[str, str],
              unprivileged: bool = False) -> list[dict[str, Any]]:
    """Namespace, Nodes, Pods, Services and EndpointSlices of the demo, as Kubernetes objects."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    for node in sorted({p.node for p in pods}):
        objs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    by_app = {p.app: p for p in pods}
    for p in pods:
        objs.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "generateName": p.generate_name,
                         "namespace": NAMESPACE, "labels": {"app": p.app}},
            "spec": {"nodeName": p.node, "containers": [{"name": "server",
                                                          "image": f"l7scope-demo/{p.app}"}]},
            "status": {"phase": "Running", "podIP": pod_ips[p.name],
                       "podIPs": [{"ip": pod_ips[p.name]}]},
        })
    for svc in catalog.SERVICES:
        pod = by_app[svc.name]
        port = service_port(svc, unprivileged)
        objs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.name, "namespace": NAMESPACE, "labels": {"app": svc.name},
                         "annotations": {ANNOTATION: "true"}},
            "spec": {"type": "ClusterIP", "clusterIP": vips[svc.name],
                     "clusterIPs": [vips[svc.name]], "selector": {"app": svc.name},
                     "ports": [{"name": svc.port_name, "port": port, "protocol": "TCP",
                                "targetPort": svc.target_port}]},
        })
        objs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc.name}-{pod.generate_name.split('-')[-2][:5]}",
                         "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": svc.name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [pod_ips[pod.name]], "conditions": {"ready": True},
                           "nodeName": pod.node,
                           "targetRef": {"kind": "Pod", "name": pod.name,
                                         "namespace": NAMESPACE}}],
            "ports": [{"name": svc.port_name, "port": svc.target_port, "protocol": "TCP"}],
        })
    return objs


def expected_graph_edges() -> set[tuple[str, str]]:
    """(caller app, callee Service) pairs the service graph must show."""
    return catalog.edges()
