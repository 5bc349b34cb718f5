"""netlab: a cluster made of network namespaces, for integration tests, benchmarks and the demo.

Nodes, pods (routed veths), Services (VIP + kube-proxy stand-in DNAT), the real TPROXY capture
rules and a real Envoy per node; see `topology.py`. `podserver` and `loadgen` are small
programs to run inside pods.
"""

from l7scope.netlab.sh import NetlabError
from l7scope.netlab.topology import (
    External,
    Node,
    Pod,
    Service,
    Topology,
    cleanup_stale,
    default_prefix,
)

__all__ = ["External", "NetlabError", "Node", "Pod", "Service", "Topology", "cleanup_stale", "default_prefix"]
