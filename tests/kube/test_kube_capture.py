"""Workshop step 4 end to end on the control side: annotating a Service through the API changes
the node agent's nftables capture set (in a network namespace of its own) within 2 s, and
removing the annotation reverts it. The node agent is the real one (`l7scope.node.agent.Agent`)
fed by the real watches (`l7scope.node.cluster_feed.start_watches`), as `l7scope node --kube` runs it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeharness import ControlPlane, restoring_node_config, wait_for

from l7scope.capture import tproxy
from l7scope.contracts import nodeconfig
from l7scope.kube.client import Kube
from l7scope.node.cluster_feed import start_watches
from l7scope.operator import chart

pytestmark = [pytest.mark.kube, pytest.mark.netns]


@pytest.fixture
def netns(require_netns: None) -> Iterator[str]:
    name = f"l7k{os.getpid()}{uuid.uuid4().hex[:4]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def service(control_plane: ControlPlane, kube: Kube) -> Iterator[dict[str, Any]]:
    crds = [d for d in chart.render() if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    ns = f"cap-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for pod, node in (("client-0", "node-a"), ("cart-0", "node-b")):
        kube.create({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": pod, "namespace": ns, "labels": {"app": pod[:-2]}},
                     "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x:1"}]}})
    svc = kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cartservice", "namespace": ns},
                       "spec": {"selector": {"app": "cart"},
                                "ports": [{"name": "grpc", "port": 7070, "targetPort": 7070}]}})
    with restoring_node_config(kube):
        if not kube.exists(nodeconfig.PATH):
            kube.create(nodeconfig.empty())
        yield {"ns": ns, "cluster_ip": svc["spec"]["clusterIP"]}
    for pod in ("client-0", "cart-0"):
        kube.delete(f"/api/v1/namespaces/{ns}/pods/{pod}", grace_period_seconds=0)
    kube.delete(f"/api/v1/namespaces/{ns}")


def test_annotation_changes_the_node_agents_nft_set_within_2s(
        control_plane: ControlPlane, kube: Kube, netns: str, service: dict[str, Any],
        tmp_path: Path, host_dir: Path) -> None:
    from l7scope.node.agent import Agent, AgentConfig

    ns, vip = service["ns"], service["cluster_ip"]
    cart_ip = wait_for(lambda: (kube.get(f"/api/v1/namespaces/{ns}/pods/cart-0").get("status") or {})
                       .get("podIP"), 30, 0.1, "backend pod running")
    client_ip = wait_for(lambda: (kube.get(f"/api/v1/namespaces/{ns}/pods/client-0").get("status") or {})
                         .get("podIP"), 30, 0.1, "client pod running")
    control_plane.kubectl("patch", "nodeagentconfiguration", "default", "--type=merge", "-p",
                          '{"spec":{"tproxyMode":"Enabled","policySyncPathPrefix":"%s"}}'
                          % (host_dir / "nodeagent"))
    settings = tmp_path / "node.yaml"
    settings.write_text(f"policySyncPathPrefix: {host_dir / 'nodeagent'}\n"
                        f"l7LogsFileEnabled: false\n")

    def kube_feed(cache: Any, stop: threading.Event) -> None:  # what `l7scope node --kube` runs
        watches = start_watches(kube, cache, agent.apply_settings)
        try:
            stop.wait()
        finally:
            watches.stop()

    agent = Agent(AgentConfig(node_name="node-a", settings_path=str(settings), netns=netns,
                              data_dir=str(tmp_path / "data"), feeds=[kube_feed]))
    agent.start()
    try:
        # Enabled, nothing annotated yet: the table holds no service address
        wait_for(lambda: agent.capture.mode == "Enabled", 5, 0.05, "tproxyMode Enabled from the API")
        wait_for(lambda: agent.cache.service_by_endpoint(cart_ip, 7070) is not None, 30, 0.05,
                 "the Service's EndpointSlice in the node agent's cache")
        sel = tproxy.installed(netns=netns)
        assert sel is None or not sel.services

        t0 = time.monotonic()
        control_plane.kubectl("annotate", "svc", "-n", ns, "cartservice", "projectcalico.org/l7-logging=true")
        want = {(vip, 7070), (cart_ip, 7070)}

        def installed_services() -> set[tuple[str, int]]:
            s = tproxy.installed(netns=netns)
            return set(s.services) if s else set()

        wait_for(lambda: installed_services() == want, 2.0, 0.02, "ClusterIP and endpoint in the nft set")
        on_after = time.monotonic() - t0
        assert f"{client_ip}/32" in (tproxy.installed(netns=netns) or tproxy.Selection()).clients

        t1 = time.monotonic()
        control_plane.kubectl("annotate", "svc", "-n", ns, "cartservice", "projectcalico.org/l7-logging-")
        wait_for(lambda: not installed_services(), 2.0, 0.02, "nft set emptied after removing the annotation")
        off_after = time.monotonic() - t1
        print(f"nft set updated {on_after * 1000:.0f} ms after annotate, "
              f"{off_after * 1000:.0f} ms after removing it (kubectl start-up included)")
    finally:
        agent.stop()
    assert tproxy.installed(netns=netns) is None  # the agent removed its table on stop
