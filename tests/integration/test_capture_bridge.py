"""A pod behind a Linux bridge with br_netfilter on (the `bridge` CNI plugin's shape): TPROXY
cannot capture it, so the node agent's capture controller leaves it out (fail open) while a
routed pod on the same node is captured. The test first shows the kernel behaviour itself:
with the bridged pod in `@clients` its connection to the ClusterIP times out, and with
bridge-nf-call-iptables=0 it is captured."""

from __future__ import annotations

from typing import Any

import pytest
from capture_support import read_log, topology, wait_log

from l7scope.capture import bridge, tproxy
from l7scope.netlab import Pod, Topology
from l7scope.netlab.sh import ip, run, sysctl
from l7scope.node.metadata import MetadataCache
from l7scope.node.selection import CaptureController

pytestmark = [pytest.mark.netns, pytest.mark.envoy]


def _curl(t: Topology, pod: Pod, addr: str, path: str) -> tuple[int, str]:
    res = t.run(pod, ["curl", "-s", "--noproxy", "*", "-m", "3", "-o", "/dev/null",
                      "-w", "%{http_code}", f"http://{addr}{path}"], check=False)
    return res.returncode, res.stdout


def _k8s_pod(name: str, ip_: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": node}, "status": {"podIP": ip_, "podIPs": [{"ip": ip_}]}}


def test_bridged_pod_is_left_out_and_routed_pod_captured(request: pytest.FixtureRequest) -> None:
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client, web = t.add_pod(n1, "client"), t.add_pod(n2, "web")
    t.start_server(web, "http", 8080)
    svc = t.add_service("web", 80, [(web, 8080)])

    # A bridge-CNI pod on n1: its veth is a port of cni0 (10.244.0.128/25), which carries the
    # route; n2 already routes 10.244.0.0/24 to n1.
    bns = f"{t.prefix}-bridged"
    ip("netns", "add", bns)
    request.addfinalizer(lambda: run(["ip", "netns", "del", bns], check=False))
    ip("link", "set", "lo", "up", netns=bns)
    ip("link", "add", "cni0", "type", "bridge", netns=n1.netns)
    ip("addr", "add", "10.244.0.129/25", "dev", "cni0", netns=n1.netns)
    ip("link", "set", "cni0", "up", netns=n1.netns)
    ip("link", "add", "bv1", "type", "veth", "peer", "name", "eth0", "netns", bns, netns=n1.netns)
    ip("link", "set", "bv1", "master", "cni0", "up", netns=n1.netns)
    ip("addr", "add", "10.244.0.130/25", "dev", "eth0", netns=bns)
    ip("link", "set", "eth0", "up", netns=bns)
    ip("route", "add", "default", "via", "10.244.0.129", netns=bns)
    sysctl(n1.netns, **{"net.bridge.bridge-nf-call-iptables": 1})
    bridged = Pod("bridged", bns, "10.244.0.130", n1)
    assert _curl(t, bridged, svc.address, "/uncaptured") == (0, "200")

    envoy = t.start_envoy(n1)
    log = envoy.settings.access_log_path
    rules = tproxy.Rules()

    # What the kernel does: bridged pod in @clients -> its SYN is TPROXYed and lost.
    sel = tproxy.Selection.of(svc.selection_entries(), [client.ip, bridged.ip])
    tproxy.apply(sel, rules, netns=n1.netns)
    assert _curl(t, client, svc.address, "/routed-1") == (0, "200")
    assert _curl(t, bridged, svc.address, "/bridged-1")[0] == 28  # timeout: no SYN-ACK
    sysctl(n1.netns, **{"net.bridge.bridge-nf-call-iptables": 0})
    assert _curl(t, bridged, svc.address, "/bridged-nf-off") == (0, "200")
    sysctl(n1.netns, **{"net.bridge.bridge-nf-call-iptables": 1})
    assert [ln["request_path"] for ln in wait_log(log, 2)] == ["/routed-1", "/bridged-nf-off"]
    tproxy.remove(rules, netns=n1.netns)

    # What the node agent does: the controller reads the node and leaves the bridged pod out.
    cache = MetadataCache()
    cache.replace_all([
        _k8s_pod("client", client.ip, "n1"), _k8s_pod("bridged", bridged.ip, "n1"),
        _k8s_pod("web", web.ip, "n2"),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": "shop",
                      "annotations": {"projectcalico.org/l7-logging": "true"}},
         "spec": {"clusterIP": svc.vip, "clusterIPs": [svc.vip],
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-x", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [web.ip]}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}])
    ctl = CaptureController(cache, "n1", rules, envoy.healthy, netns=n1.netns,
                            host_net=lambda: bridge.read_host(n1.netns))
    ctl.set_mode("Enabled", rules)
    request.addfinalizer(ctl.stop)
    ctl.step()
    installed = tproxy.installed(rules, n1.netns)
    assert installed is not None and installed.clients == {f"{client.ip}/32"}
    assert (ctl.stats.state, ctl.stats.bridged_clients, ctl.stats.bridges,
            ctl.stats.bridge_nf_call_iptables) == ("active", 1, ["cni0"], True)
    n_logged = len(read_log(log))
    assert _curl(t, bridged, svc.address, "/bridged-2") == (0, "200")  # fail open
    assert _curl(t, client, svc.address, "/routed-2") == (0, "200")  # captured
    assert [ln["request_path"] for ln in wait_log(log, n_logged + 1)][n_logged:] == ["/routed-2"]
