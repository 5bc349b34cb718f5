"""Fixtures for tests on a real Kubernetes node (marker `cluster`); see clusterharness.py."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import clusterharness

from l7scope.kube.client import Kube


# Package scope: the cluster goes down after the last test of tests/cluster, not at the end of
# the whole run, so the rest of the suite does not share the machine with it.
@pytest.fixture(scope="package")
def cluster() -> Iterator[clusterharness.Cluster]:
    yield from running_cluster(None)


def running_cluster(nodes: int | None) -> Iterator[clusterharness.Cluster]:
    """A started cluster of `nodes` nodes (None: L7SCOPE_CLUSTER_NODES, default 1), stopped after
    the yield with nothing left behind; skipped where the machine cannot run a node."""
    why = clusterharness.missing_parts()
    if why:
        pytest.skip(f"no real test node: {why}")
    # The machine can run a node, but this checkout's image is missing or stale: a failure, not
    # a skip (a skip would hide that the cluster tests did not run this checkout's code).
    bad_image = clusterharness.image_problem()
    if bad_image:
        pytest.fail(f"the cluster tests need this checkout's image: {bad_image}", pytrace=False)
    c = clusterharness.start(nodes)
    print(f"\ncluster up ({len(c.nodes)} nodes): "
          f"{', '.join(f'{k} {v:.1f}s' for k, v in c.timings.items())}")
    try:
        yield c
    finally:
        t0 = time.monotonic()
        left = c.stop()
        print(f"\ncluster down in {time.monotonic() - t0:.1f}s")
        assert not left, f"the test cluster left behind: {left}"


@pytest.fixture(scope="package")
def kube(cluster: clusterharness.Cluster) -> Iterator[Kube]:
    k = cluster.kube()
    yield k
    k.close()


@pytest.fixture(scope="module")
def namespace(kube: Kube) -> Iterator[str]:
    """A namespace of its own per test module, deleted at the end."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # its token too (1.20's token controller adds the Secret a moment later; a pod created
    # before it is refused: "No API token found for service account default")
    clusterharness.wait_for(
        lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").get("secrets"), 30,
        "the namespace's default service account and its token")
    yield name
    # Not waited for here (the kubelet takes ~15 s per pod to confirm a deletion, most of it its
    # status manager's 10 s sync period): the cluster's teardown waits until no pod is left.
    kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def pods(kube: Kube, namespace: str) -> clusterharness.Pods:
    return clusterharness.Pods(kube, namespace)
