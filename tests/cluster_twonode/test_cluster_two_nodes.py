"""The workshop's install on two real nodes: a client pod on one node reaches an annotated
Service whose endpoint is on the other (cross node) and one on the endpoint's node (same node);
the client node's Envoy captures each call, and the server stores each edge's exact count. The
test and its fixtures are tests/cluster/test_cluster_workshop.py's, run here on two nodes (there,
on one node, only its same-node half is cross-checked)."""

from __future__ import annotations

import pytest
from cluster.test_cluster_workshop import (
    install,
    server_api,
    shop,
    test_cross_node_and_same_node_capture,
)

__all__ = ["install", "server_api", "shop", "test_cross_node_and_same_node_capture"]

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]
