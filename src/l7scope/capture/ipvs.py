"""Whether kube-proxy runs in IPVS mode on this node, where l7scope's capture is not supported.

In IPVS mode kube-proxy binds every ClusterIP to the dummy interface `kube-ipvs0` and rewrites
connections in the kernel's IPVS hook on local input, after the prerouting hooks where TPROXY
assigns Envoy's socket. Whether a TPROXY-assigned packet then reaches Envoy or is sent on by IPVS
depends on kernel internals that the test machines cannot exercise (they have no `ip_vs`
module), so the node agent does not guess: with `kube-ipvs0` present it installs no capture
rules at all (fail open: Services answer as without l7scope), logs why once and reports capture
state `unsupported` with the reason. kube-proxy's iptables mode (tested on a real node) and its
nftables mode (the netlab's kube-proxy stand-in works the same way: conntrack DNAT in its own
table at priority dstnat) are supported. docs/kubernetes.md has the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from l7scope.capture.bridge import Link

#: The dummy interface kube-proxy creates in IPVS mode (`--proxy-mode=ipvs`) for the ClusterIPs.
IPVS_LINK: Final = "kube-ipvs0"
REASON: Final = ("kube-proxy runs in IPVS mode (interface kube-ipvs0): l7scope's TPROXY capture "
                 "supports kube-proxy's iptables and nftables modes only")


def unsupported_reason(links: Mapping[str, Link]) -> str:
    """Why capture cannot run on a node with these links, or "" when it can."""
    return REASON if IPVS_LINK in links else ""
