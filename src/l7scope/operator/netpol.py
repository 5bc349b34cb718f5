"""The server pod's NetworkPolicy. Pure: nodes in, one manifest out.

Ingress to the server pod is admitted on the server port only, from:

- the node agents. They run on the host network, so no podSelector matches them: their
  connections come from a node address. The policy lists every node's `InternalIP` as a /32
  (/128) `ipBlock`; the operator re-renders it when a node's addresses change. Limitation: on
  some CNIs a host-network client reaches a pod with another source address (a tunnel or bridge
  interface's, e.g. `tunl0`, `flannel.1`, `cni0`); there the agents are refused until those
  addresses are admitted too (docs/security.md, "The server's NetworkPolicy").
- the UI path: pods labelled `l7scope.io/ui-access: "true"` in any namespace (a proxy or
  ingress controller in front of the page).

Everything else is refused, other ports too. `kubectl port-forward` is not affected: it enters
the pod's own network namespace. A NetworkPolicy needs a CNI that enforces it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Final

NAME: Final = "l7scope-server"
UI_ACCESS_LABEL: Final = "l7scope.io/ui-access"


def node_addresses(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every node's InternalIP (IPv4 and IPv6), sorted, as CIDRs of one address."""
    out: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for node in nodes:
        for a in (node.get("status") or {}).get("addresses") or []:
            if a.get("type") != "InternalIP":
                continue
            try:
                ip = ipaddress.ip_address(str(a.get("address")))
            except ValueError:
                continue
            out.add(ip)
    return [f"{ip}/{ip.max_prefixlen}" for ip in sorted(out, key=lambda i: (i.version, int(i)))]


def sort_cidrs(cidrs: Iterable[str]) -> list[str]:
    """IPv4 first, then by address."""
    nets = [ipaddress.ip_network(c) for c in cidrs]
    return [str(n) for n in sorted(nets, key=lambda n: (n.version, int(n.network_address)))]


def network_policy(meta: dict[str, Any], pod_labels: Mapping[str, str], port: int,
                   node_cidrs: list[str]) -> dict[str, Any]:
    sources: list[dict[str, Any]] = [{"ipBlock": {"cidr": c}} for c in node_cidrs]
    sources.append({"namespaceSelector": {},
                    "podSelector": {"matchLabels": {UI_ACCESS_LABEL: "true"}}})
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {**meta, "name": NAME},
        "spec": {
            "podSelector": {"matchLabels": dict(pod_labels)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": port}]}],
        },
    }
