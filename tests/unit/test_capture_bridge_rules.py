"""Which clients TPROXY cannot capture (bridge + br_netfilter), and the controller leaving them
out (fail open), logging once and counting them; with injected host readers and clock."""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest

from l7scope.capture import bridge, tproxy
from l7scope.capture.bridge import HostNet, Link
from l7scope.node.metadata import MetadataCache
from l7scope.node.selection import CaptureController
from l7scope.testing.node_inputs import pod, shop

N = ipaddress.IPv4Network

# a node with both shapes: a bridge CNI (cni0, 10.1.1.0/25, port veth1) and routed /32s
ROUTES = ((N("0.0.0.0/0"), "eth0"), (N("10.1.1.0/25"), "cni0"), (N("10.1.1.11/32"), "cali1"),
          (N("10.1.1.200/32"), "veth9"))
LINKS = {"eth0": Link("eth0"), "cni0": Link("cni0", "bridge"),
         "veth1": Link("veth1", "veth", "cni0", "bridge"), "cali1": Link("cali1", "veth"),
         "veth9": Link("veth9", "veth", "cni0", "bridge")}


def test_bridged_only_with_br_netfilter_on() -> None:
    clients = ["10.1.1.10/32", "10.1.1.11/32", "10.1.1.200/32", "192.168.9.9/32"]
    on = HostNet(ROUTES, LINKS, bridge_nf_call_iptables=True)
    # via the bridge's own route; a /32 route to a bridge port; routed veth and default: fine
    assert bridge.bridged_clients(clients, on) == {"10.1.1.10/32": "cni0",
                                                   "10.1.1.200/32": "cni0"}
    assert bridge.bridged_clients(clients, HostNet(ROUTES, LINKS, False)) == {}
    assert bridge.bridged_clients(["10.1.1.10/32"], HostNet((), LINKS, True)) == {}  # no route


def test_longest_prefix_wins() -> None:
    routes = ((N("10.1.0.0/16"), "cni0"), (N("10.1.1.11/32"), "cali1"))
    assert bridge.route_dev(ipaddress.IPv4Address("10.1.1.11"), routes) == "cali1"
    assert bridge.route_dev(ipaddress.IPv4Address("10.1.7.1"), routes) == "cni0"
    assert bridge.route_dev(ipaddress.IPv4Address("10.2.0.1"), routes) is None


def test_parse_ip_json() -> None:
    routes = bridge.parse_routes(json.dumps([
        {"dst": "default", "gateway": "172.30.0.254", "dev": "eth0", "flags": []},
        {"dst": "10.244.0.0/24", "dev": "cni0", "protocol": "kernel", "scope": "link",
         "prefsrc": "10.244.0.1", "flags": []},
        {"type": "blackhole", "dst": "10.244.9.0/24", "flags": []},
        {"dst": "10.244.0.7", "dev": "cali7", "scope": "link", "flags": []}]))
    assert routes == ((N("0.0.0.0/0"), "eth0"), (N("10.244.0.0/24"), "cni0"),
                      (N("10.244.0.7/32"), "cali7"))
    links = bridge.parse_links(json.dumps([
        {"ifindex": 1, "ifname": "lo", "flags": []},
        {"ifindex": 3, "ifname": "cni0", "linkinfo": {"info_kind": "bridge"}},
        {"ifindex": 4, "ifname": "veth1", "master": "cni0",
         "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge"}}]))
    assert links["veth1"] == Link("veth1", "veth", "cni0", "bridge")
    assert bridge.bridge_of("veth1", links) == "cni0" and bridge.bridge_of("cni0", links) == "cni0"
    assert bridge.bridge_of("lo", links) is None and bridge.bridge_of("nope", links) is None


class Kernel:
    def __init__(self) -> None:
        self.installed: tproxy.Selection | None = None

    def apply(self, sel: tproxy.Selection, rules: tproxy.Rules, netns: str | None = None) -> None:
        self.installed = sel

    def remove(self, rules: tproxy.Rules, netns: str | None = None) -> None:
        self.installed = None


def test_controller_leaves_bridged_clients_out_logs_once_and_rechecks(
        caplog: pytest.LogCaptureFixture) -> None:
    cache = MetadataCache()
    cache.replace_all(shop())  # clients on node-a: 10.1.1.10 and 10.1.1.11
    host = [HostNet(ROUTES, LINKS, True)]
    reads = [0]
    now = [100.0]

    def read() -> HostNet:
        reads[0] += 1
        return host[0]

    k = Kernel()
    ctl = CaptureController(cache, "node-a", tproxy.Rules(), lambda: True, apply=k.apply,
                            remove=k.remove, host_net=read, clock=lambda: now[0],
                            recheck_seconds=10)
    ctl.set_mode("Enabled", tproxy.Rules())
    with caplog.at_level(logging.WARNING, logger="l7scope.node.selection"):
        ctl.step()
        ctl.step()
        cache.upsert(pod("late", "shop", "10.1.1.12", "node-a"))  # also behind cni0
        ctl.step()
    assert k.installed is not None and k.installed.clients == {"10.1.1.11/32"}
    assert ("10.96.0.10", 80) in k.installed.services
    assert (ctl.stats.bridged_clients, ctl.stats.bridges, ctl.stats.bridge_nf_call_iptables,
            ctl.stats.clients, ctl.stats.state) == (2, ["cni0"], True, 1, "active")
    warnings = [r.getMessage() for r in caplog.records if "bridge cni0" in r.getMessage()]
    assert len(warnings) == 1 and "NOT captured (fail open)" in warnings[0]
    assert "10.1.1.10/32" in warnings[0]
    assert reads[0] == 2  # first step and the cache change; not on every step

    # br_netfilter switched off: re-read after recheck_seconds, the pods are captured again
    host[0] = HostNet(ROUTES, LINKS, False)
    now[0] += 5
    ctl.step()
    assert k.installed.clients == {"10.1.1.11/32"} and reads[0] == 2
    now[0] += 6
    ctl.step()
    assert k.installed.clients == {"10.1.1.10/32", "10.1.1.11/32", "10.1.1.12/32"}
    assert (ctl.stats.bridged_clients, ctl.stats.bridges) == (0, [])


def test_controller_captures_as_configured_when_the_host_cannot_be_read() -> None:
    cache = MetadataCache()
    cache.replace_all(shop())

    def broken() -> HostNet:
        raise bridge.HostReadError("ip -j route failed: boom")

    k = Kernel()
    ctl = CaptureController(cache, "node-a", tproxy.Rules(), lambda: True, apply=k.apply,
                            remove=k.remove, host_net=broken)
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    assert k.installed is not None and k.installed.clients == {"10.1.1.10/32", "10.1.1.11/32"}
    assert ctl.stats.host_check_errors == 1 and "boom" in ctl.stats.last_host_check_error


def test_controller_captures_nothing_under_kube_proxy_ipvs_and_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    cache = MetadataCache()
    cache.replace_all(shop())
    ipvs_links = {**LINKS, "kube-ipvs0": Link("kube-ipvs0", "dummy")}
    host = [HostNet(ROUTES, ipvs_links, False)]
    now = [100.0]
    k = Kernel()
    ctl = CaptureController(cache, "node-a", tproxy.Rules(), lambda: True, apply=k.apply,
                            remove=k.remove, host_net=lambda: host[0], clock=lambda: now[0],
                            recheck_seconds=10)
    ctl.set_mode("Enabled", tproxy.Rules())
    with caplog.at_level(logging.WARNING, logger="l7scope.node.selection"):
        ctl.step()
        now[0] += 11
        ctl.step()  # re-read, still IPVS: no second warning
    assert k.installed is None and ctl.stats.state == "unsupported"
    assert "IPVS" in ctl.stats.unsupported
    warnings = [r.getMessage() for r in caplog.records if "IPVS" in r.getMessage()]
    assert len(warnings) == 1 and "fail open" in warnings[0]
    # the status command shows the reason
    from l7scope.status.probe import node_agent_warnings
    shown = node_agent_warnings({"capture_state": ctl.stats.state,
                                 "capture": {"unsupported": ctl.stats.unsupported}})
    assert shown and "kube-ipvs0" in shown[0] and "fail open" in shown[0]

    # kube-proxy back in iptables mode: after the recheck the rules are installed again
    host[0] = HostNet(ROUTES, LINKS, False)
    now[0] += 11
    ctl.step()
    assert k.installed is not None and k.installed.clients == {"10.1.1.10/32", "10.1.1.11/32"}
    assert (ctl.stats.state, ctl.stats.unsupported) == ("active", "")


def test_controller_withdraws_installed_rules_when_ipvs_appears() -> None:
    cache = MetadataCache()
    cache.replace_all(shop())
    host = [HostNet(ROUTES, LINKS, False)]
    now = [0.0]
    k = Kernel()
    ctl = CaptureController(cache, "node-a", tproxy.Rules(), lambda: True, apply=k.apply,
                            remove=k.remove, host_net=lambda: host[0], clock=lambda: now[0],
                            recheck_seconds=10)
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    assert k.installed is not None
    host[0] = HostNet(ROUTES, {**LINKS, "kube-ipvs0": Link("kube-ipvs0", "dummy")}, False)
    now[0] += 11
    ctl.step()
    assert k.installed is None and ctl.stats.state == "unsupported"
