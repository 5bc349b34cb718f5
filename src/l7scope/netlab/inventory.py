"""A netlab topology as the Kubernetes objects a node agent's `--inventory` directory takes:
a Pod per pod, a Service and an EndpointSlice per Service, all in one namespace; Services in
`annotated` carry `projectcalico.org/l7-logging: "true"`. For tests and benchmarks that run the
real node agent on netlab without an API server."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from l7scope.netlab.topology import Topology

ANNOTATION = "projectcalico.org/l7-logging"


def objects(t: Topology, annotated: Collection[str], namespace: str = "shop") -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for p in t.pods.values():
        objs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{p.name}-5f7d8-abcde", "namespace": namespace,
                                  "generateName": f"{p.name}-5f7d8-"},
                     "spec": {"nodeName": p.node.name}, "status": {"podIP": p.ip}})
    for s in t.services.values():
        ann = {ANNOTATION: "true"} if s.name in annotated else {}
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": s.name, "namespace": namespace, "annotations": ann},
                     "spec": {"clusterIP": s.vip, "ports": [
                         {"name": "http", "port": s.port, "protocol": "TCP",
                          "targetPort": s.endpoints[0][1]}]}})
        objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": f"{s.name}-x", "namespace": namespace,
                                  "labels": {"kubernetes.io/service-name": s.name}},
                     "endpoints": [{"addresses": [ip]} for ip, _ in s.endpoints],
                     "ports": [{"name": "http", "port": s.endpoints[0][1], "protocol": "TCP"}]})
    return objs


def write(directory: Path, t: Topology, annotated: Collection[str]) -> None:
    """Replace `directory/shop.yaml` atomically (the agent re-reads the directory on change)."""
    tmp = directory / ".shop.yaml.tmp"
    tmp.write_text(yaml.safe_dump_all(objects(t, annotated)))
    tmp.rename(directory / "shop.yaml")
