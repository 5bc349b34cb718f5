"""Fixtures of the two-node cluster (marker `cluster`): the same as tests/cluster's, on a cluster
of two real nodes. This package runs after tests/cluster, whose one-node cluster is down by then
(package scope), so the two never run at once (they also share the machine lock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster.conftest import clusterharness, kube, namespace, pods, running_cluster

__all__ = ["kube", "namespace", "pods"]


@pytest.fixture(scope="package")
def cluster() -> Iterator[clusterharness.Cluster]:
    yield from running_cluster(2)
