"""The real node registers and is Ready: a kubelet v1.20.2 on containerd, with kube-proxy."""

from __future__ import annotations

import clusterharness
import pytest
from clusterharness import Cluster

from l7scope.kube.client import Kube

pytestmark = pytest.mark.cluster


def test_node_is_ready_on_containerd(cluster: Cluster, kube: Kube) -> None:
    node = kube.get(f"/api/v1/nodes/{clusterharness.NODE}")
    status = node["status"]
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True", status["conditions"]
    info = status["nodeInfo"]
    assert info["kubeletVersion"] == "v1.20.2"
    assert info["kubeProxyVersion"] == "v1.20.2"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6."), info
    addresses = {a["type"]: a["address"] for a in status["addresses"]}
    assert addresses["InternalIP"] == clusterharness.NODE_IP
    # The images were imported into the node's containerd, not pulled: the kubelet reports them.
    names = {n for img in status.get("images", []) for n in img.get("names", [])}
    for which in ("pause", "base", "l7scope"):
        assert any(n.endswith(cluster.image(which).split("/", 1)[1]) for n in names), (which, names)


def test_kube_proxy_programs_the_node(cluster: Cluster) -> None:
    """kube-proxy's iptables rules are in the node's netns (and not in the host's)."""
    def has_services_chain() -> bool:
        r = clusterharness.in_netns("iptables", "-t", "nat", "-S", "KUBE-SERVICES", check=False)
        return r.returncode == 0 and "default/kubernetes:https cluster IP" in r.stdout
    clusterharness.wait_for(has_services_chain, 30, "kube-proxy's KUBE-SERVICES rules",
                            diagnose=cluster.diagnose)
    host = clusterharness.run("nft", "list", "tables", check=False).stdout
    assert clusterharness.GUARD_TABLE in host
