"""A kube-proxy stand-in: DNAT from a Service VIP:port to its endpoints, in its own nft table.

One `inet` table: a Service with an IPv6 VIP gets `ip6` rules (a dual-stack Service is two
`ServiceRule`s, one per family). Installed in every node namespace, it does what kube-proxy's iptables mode does to a
connection to a ClusterIP: conntrack-based DNAT in the nat hooks (priority dstnat, like
iptables' `nat PREROUTING`/`OUTPUT` chains `KUBE-SERVICES`), for EVERY tracked packet. It does
not know about l7scope: packets marked for TPROXY are DNATed like any other, exactly as a real
kube-proxy would. Two hooks jump to one `services` chain:

- `prerouting`: connections from pods (forwarded through the node);
- `output`: connections the node itself opens, such as Envoy's upstream connection to the VIP.

Like kube-proxy, a connection from an endpoint to its own Service (hairpin) gets the
masquerade mark 0x4000 and is masqueraded in postrouting (`KUBE-MARK-MASQ`,
`KUBE-POSTROUTING`), which is what makes kube-proxy's mark bit a real constraint for the
capture rules' marks.

NodePorts (`node_port`): a connection to any of the node's own addresses on that port is DNATed
as well (KUBE-NODEPORTS, `--dst-type LOCAL`), from outside and from the node itself; with
`externalTrafficPolicy: Cluster` to any endpoint and masqueraded, with `Local` to this node's
endpoints only and not masqueraded.

Several endpoints are picked round robin with `numgen inc`. Endpoint-less services are left
out (connections to them fail, as in a cluster). The capture table (`l7scope.capture.tproxy`)
is a different table and is never touched here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from l7scope.netlab.sh import run

TABLE = "netlab_kubeproxy"
MASQUERADE_MARK = 0x4000
"""kube-proxy's default `--iptables-masquerade-bit` 14."""


@dataclass(frozen=True)
class ServiceRule:
    vip: str
    port: int
    endpoints: Sequence[tuple[str, int]]
    node_port: int = 0
    """0: ClusterIP only. Otherwise `<any node address>:node_port` is DNATed too."""
    local_endpoints: Sequence[tuple[str, int]] | None = None
    """None: `externalTrafficPolicy: Cluster` (NodePort connections go to any endpoint and are
    masqueraded, KUBE-EXT's KUBE-MARK-MASQ). A list: `Local`, this node's endpoints only, the
    client's address kept; no local endpoint: the connection is dropped."""


def _proto(addr: str) -> str:
    return "ip6" if ":" in addr else "ip"


def _dnat(match: str, eps: Sequence[tuple[str, int]]) -> str:
    proto = _proto(eps[0][0])
    if len(eps) == 1:
        ip = f"[{eps[0][0]}]" if proto == "ip6" else eps[0][0]
        return f"    {match} dnat {proto} to {ip}:{eps[0][1]}"
    mapping = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(eps))
    return f"    {match} dnat {proto} to numgen inc mod {len(eps)} map {{ {mapping} }}"


def render(services: Iterable[ServiceRule], table: str = TABLE) -> str:
    """The nft script that (re)creates the table, as one transaction."""
    rules: list[str] = []
    mark = f"0x{MASQUERADE_MARK:x}"
    for s in sorted(services, key=lambda s: (s.vip, s.port)):
        eps = list(s.endpoints)
        if not eps:
            continue
        proto = _proto(s.vip)
        match = f"{proto} daddr {s.vip} tcp dport {s.port}"
        hairpin = ", ".join(sorted({ip for ip, _ in eps}))
        rules.append(f"    {match} {proto} saddr {{ {hairpin} }} meta mark set meta mark | {mark}")
        rules.append(_dnat(match, eps))
        if not s.node_port:
            continue
        nfproto = "ipv6" if proto == "ip6" else "ipv4"
        np = f"meta nfproto {nfproto} fib daddr type local tcp dport {s.node_port}"
        if s.local_endpoints is None:
            rules.append(f"    {np} meta mark set meta mark | {mark}")
            rules.append(_dnat(np, eps))
        elif s.local_endpoints:
            rules.append(_dnat(np, list(s.local_endpoints)))
        else:
            rules.append(f"    {np} drop")
    return "\n".join([
        f"table inet {table} {{}}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain services {",
        *rules,
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    jump services",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    jump services",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta mark & {mark} == {mark} meta mark set meta mark & 0x{~MASQUERADE_MARK & 0xffffffff:x}"
        " masquerade",
        "  }",
        "}",
    ]) + "\n"


def apply(netns: str, services: Iterable[ServiceRule]) -> None:
    run(["nft", "-f", "-"], netns, stdin=render(services))
