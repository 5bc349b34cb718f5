"""Builders of Kubernetes-shaped dicts and Policy Sync Report messages (the node agent's inputs)."""

from __future__ import annotations

from typing import Any

from l7scope.contracts import policysync_pb2 as pb


def pod(name: str, ns: str, ip: str, node: str = "node-a", generate_name: str = "",
        host_network: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if generate_name:
        meta["generateName"] = generate_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "hostNetwork": host_network},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def service(name: str, ns: str, cluster_ip: str, ports: list[tuple[str, int, int]],
            annotations: dict[str, str] | None = None, protocol: str = "TCP") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ports": [{"name": pn, "port": p, "targetPort": tp, "protocol": protocol}
                               for pn, p, tp in ports]}}


def endpoint_slice(service_name: str, ns: str, ips: list[str], ports: list[tuple[str, int]],
                   protocol: str = "TCP") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": n, "port": p, "protocol": protocol} for n, p in ports]}


def shop() -> list[dict[str, Any]]:
    """Two namespaces: frontend pods on node-a, a cart Service (2 replicas) and a db Service."""
    return [
        pod("frontend-7bbcdbbcbf-x1", "shop", "10.1.1.10", "node-a", "frontend-7bbcdbbcbf-"),
        pod("frontend-7bbcdbbcbf-x2", "shop", "10.1.1.11", "node-a", "frontend-7bbcdbbcbf-"),
        pod("cart-5d9f8-aaaaa", "shop", "10.1.2.20", "node-b", "cart-5d9f8-"),
        pod("cart-5d9f8-bbbbb", "shop", "10.1.2.21", "node-b", "cart-5d9f8-"),
        pod("db", "data", "10.1.2.30", "node-b"),
        service("cart", "shop", "10.96.0.10", [("http", 80, 8080)],
                {"projectcalico.org/l7-logging": "true"}),
        endpoint_slice("cart", "shop", ["10.1.2.20", "10.1.2.21"], [("http", 8080)]),
        service("db", "data", "10.96.0.20", [("", 5432, 5432)]),
        endpoint_slice("db", "data", ["10.1.2.30"], [("", 5432)]),
        {"kind": "Node", "metadata": {"name": "node-a"},
         "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.1"}]}},
        {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
         "metadata": {"name": "partners"}, "spec": {"nets": ["203.0.113.0/24"]}},
    ]


def http_data(path: str = "/", method: str = "GET", code: int = 200, count: int = 1,
              domain: str = "cart", duration_ms: int = 0, duration_max_ms: int = 0,
              type_: str = "HTTP/1.1", **kw: Any) -> pb.HTTPData:
    return pb.HTTPData(request_path=path, request_method=method, response_code=code,
                       count=count, domain=domain, duration=duration_ms,
                       duration_max=duration_max_ms, type=type_, **kw)


def report(entries: list[pb.HTTPData], src: str = "10.1.1.10", dst: str = "10.96.0.10",
           sport: int = 40000, dport: int = 80, seen: int | None = None) -> pb.DataplaneStats:
    total = sum(e.count for e in entries) if seen is None else seen
    return pb.DataplaneStats(
        src_ip=src, dst_ip=dst, src_port=sport, dst_port=dport,
        protocol=pb.Protocol(name="tcp"), http_data=entries,
        stats=[pb.Statistic(direction=pb.Statistic.IN, relativity=pb.Statistic.DELTA,
                            kind=pb.Statistic.HTTP_DATA, action=pb.ALLOWED, value=total)])
