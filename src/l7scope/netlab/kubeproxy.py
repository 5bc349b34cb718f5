"""A kube-proxy stand-in: DNAT from a Service VIP:port to its endpoints, in its own nft table.

Installed in every node namespace. Two hooks jump to one `services` chain:

- `prerouting` (pod traffic): skips packets that carry the TPROXY mark, so a captured
  connection reaches Envoy with the VIP still as its destination (Envoy logs the VIP as
  `downstream_local_address`, as in a cluster where kube-proxy's DNAT happens later).
- `output` (Envoy's own upstream connections to the VIP): DNAT as for any local client.

Several endpoints are picked round robin with `numgen inc`. Endpoint-less services are left
out (connections to them fail, as in a cluster). The capture table (`l7scope.capture.tproxy`)
is a different table and is never touched here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from l7scope.capture.tproxy import DEFAULT_MARK
from l7scope.netlab.sh import run

TABLE = "netlab_kubeproxy"


@dataclass(frozen=True)
class ServiceRule:
    vip: str
    port: int
    endpoints: Sequence[tuple[str, int]]


def render(services: Iterable[ServiceRule], skip_mark: int = DEFAULT_MARK,
           table: str = TABLE) -> str:
    """The nft script that (re)creates the table, as one transaction."""
    rules: list[str] = []
    for s in sorted(services, key=lambda s: (s.vip, s.port)):
        eps = list(s.endpoints)
        match = f"ip daddr {s.vip} tcp dport {s.port}"
        if len(eps) == 1:
            rules.append(f"    {match} dnat ip to {eps[0][0]}:{eps[0][1]}")
        elif eps:
            mapping = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(eps))
            rules.append(f"    {match} dnat ip to numgen inc mod {len(eps)} map {{ {mapping} }}")
    mark = f"0x{skip_mark:x}"
    return "\n".join([
        f"table ip {table} {{}}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  chain services {",
        *rules,
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    meta mark & {mark} == {mark} return",
        "    jump services",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    jump services",
        "  }",
        "}",
    ]) + "\n"


def apply(netns: str, services: Iterable[ServiceRule], skip_mark: int = DEFAULT_MARK) -> None:
    run(["nft", "-f", "-"], netns, stdin=render(services, skip_mark))
