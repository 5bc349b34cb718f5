"""Traffic selection (annotations, TCP only, EnabledAllServices, local clients) and the capture
controller's fail-open life cycle, with recording apply/remove functions (no root needed; the
real nftables path is covered by tests/integration/test_node_capture.py)."""

from __future__ import annotations

from typing import Any

from l7scope.capture import tproxy
from l7scope.node.metadata import MetadataCache
from l7scope.node.selection import CaptureController, select
from l7scope.testing.node_inputs import endpoint_slice, pod, service, shop


def cache_with(*extra: dict[str, Any]) -> MetadataCache:
    c = MetadataCache()
    c.replace_all([*shop(), *extra])
    return c


def test_annotated_services_and_endpoints() -> None:
    sel = select(cache_with(), "Enabled", "node-a")
    assert sel.services == {("10.96.0.10", 80), ("10.1.2.20", 8080), ("10.1.2.21", 8080)}
    assert sel.clients == {"10.1.1.10/32", "10.1.1.11/32"}  # pods on node-a only


def test_annotation_value_must_be_exactly_true() -> None:
    c = cache_with(service("a", "x", "10.96.1.1", [("", 80, 80)], {"l7scope.io/logging": "true"}),
                   service("b", "x", "10.96.1.2", [("", 80, 80)],
                           {"projectcalico.org/l7-logging": "True"}),
                   service("u", "x", "10.96.1.3", [("dns", 53, 53)],
                           {"l7scope.io/logging": "true"}, protocol="UDP"))
    sel = select(c, "Enabled", "node-a")
    assert ("10.96.1.1", 80) in sel.services
    assert ("10.96.1.2", 80) not in sel.services
    assert ("10.96.1.3", 53) not in sel.services  # TCP only


def test_all_services_and_disabled() -> None:
    sel = select(cache_with(), "EnabledAllServices", "node-a")
    assert {("10.96.0.20", 5432), ("10.1.2.30", 5432)} <= sel.services
    assert select(cache_with(), "Disabled", "node-a") == tproxy.Selection()


def test_host_network_pods_are_not_clients() -> None:
    c = cache_with(pod("hn", "kube-system", "172.30.0.1", "node-a", host_network=True))
    assert "172.30.0.1/32" not in select(c, "Enabled", "node-a").clients


class Kernel:
    def __init__(self) -> None:
        self.installed: tproxy.Selection | None = None
        self.calls: list[str] = []

    def apply(self, sel: tproxy.Selection, rules: tproxy.Rules, netns: str | None = None) -> None:
        self.installed = sel
        self.calls.append("apply")

    def remove(self, rules: tproxy.Rules, netns: str | None = None) -> None:
        self.installed = None
        self.calls.append("remove")


def test_controller_follows_changes_and_fails_open() -> None:
    c = cache_with()
    k = Kernel()
    ready = [True]
    ctl = CaptureController(c, "node-a", tproxy.Rules(), lambda: ready[0],
                            apply=k.apply, remove=k.remove)
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    assert k.installed is not None and ("10.96.0.10", 80) in k.installed.services
    assert ctl.stats.state == "active" and ctl.stats.selected_services == 1
    ctl.step()
    assert k.calls == ["apply"]  # unchanged: nothing re-applied
    # un-annotate
    c.upsert(service("cart", "shop", "10.96.0.10", [("http", 80, 8080)]))
    ctl.step()
    assert k.installed is not None and not k.installed.services
    # Envoy not ready -> withdrawn; ready again -> restored
    c.upsert(service("cart", "shop", "10.96.0.10", [("http", 80, 8080)],
                     {"projectcalico.org/l7-logging": "true"}))
    ready[0] = False
    ctl.step()
    assert k.installed is None and ctl.stats.state == "withdrawn"
    ready[0] = True
    ctl.step()
    assert k.installed is not None and ("10.96.0.10", 80) in k.installed.services
    # Disabled -> removed; stop removes too
    ctl.set_mode("Disabled", tproxy.Rules())
    ctl.step()
    assert k.installed is None and ctl.stats.state == "disabled"
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    ctl.stop()
    assert k.installed is None


def test_controller_closed_at_the_stop_withdraws_for_good() -> None:
    # the agent's SIGTERM: rules go at once, and a control-loop step after that (Envoy still
    # answering its probe for a moment) must not put them back
    k = Kernel()
    ctl = CaptureController(cache_with(), "node-a", tproxy.Rules(), lambda: True,
                            apply=k.apply, remove=k.remove)
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    assert k.installed is not None
    ctl.close()
    assert k.installed is None and ctl.stats.state == "withdrawn"
    ctl.step()
    ctl.step()
    assert k.installed is None and k.calls == ["apply", "remove"]


def test_controller_apply_error_is_counted() -> None:
    def boom(*a: Any, **kw: Any) -> None:
        raise tproxy.CaptureError("nft failed: nope")

    ctl = CaptureController(cache_with(endpoint_slice("x", "y", [], [])), "node-a",
                            tproxy.Rules(), lambda: True, apply=boom, remove=lambda *a, **k: None)
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    assert ctl.stats.state == "error" and ctl.stats.errors == 1 and "nope" in ctl.stats.last_error


def test_garbage_addresses_are_skipped() -> None:
    c = cache_with(service("bad", "x", "not-an-ip", [("", 80, 80), ("", 70000, 1)],
                           {"l7scope.io/logging": "true"}),
                   service("v6", "x", "fd00::1", [("", 80, 80)], {"l7scope.io/logging": "true"}))
    sel = select(c, "Enabled", "node-a", ipv6=True)
    assert ("10.96.0.10", 80) in sel.services
    assert not any(ip == "not-an-ip" for ip, _ in sel.services)
    assert ("fd00::1", 80) in sel.services  # IPv6 ClusterIPs are captured too (inet table)


def test_ipv6_only_with_ipv6_support() -> None:
    """Without ipv6Support Envoy has no IPv6 listener: IPv6 addresses stay out of capture (a
    TPROXYed connection would find no socket), IPv4 ones are captured as before."""
    c = cache_with(service("v6", "x", "fd00::1", [("", 80, 80)], {"l7scope.io/logging": "true"}),
                   pod("p6", "x", "fd00:244::5", "node-a"))
    off, on = select(c, "Enabled", "node-a"), select(c, "Enabled", "node-a", ipv6=True)
    assert not any(":" in ip for ip, _ in off.services) and not any(":" in ip for ip in off.clients)
    assert ("10.96.0.10", 80) in off.services
    assert ("fd00::1", 80) in on.services and "fd00:244::5/128" in on.clients
    assert off.services <= on.services

    applied: list[tproxy.Selection] = []
    ctl = CaptureController(c, "node-a", tproxy.Rules(), envoy_ready=lambda: True,
                            apply=lambda sel, rules, netns=None: applied.append(sel),
                            remove=lambda rules, netns=None: None)
    ctl.set_mode("Enabled", tproxy.Rules())
    ctl.step()
    assert ("fd00::1", 80) not in applied[-1].services
    ctl.set_mode("Enabled", tproxy.Rules(), ipv6=True)
    ctl.step()
    assert ("fd00::1", 80) in applied[-1].services


def test_nodeports_of_selected_tcp_services() -> None:
    np = service("np", "x", "10.96.1.5", [("web", 80, 8080), ("admin", 81, 8081)],
                 {"l7scope.io/logging": "true"})
    np["spec"]["type"] = "NodePort"
    np["spec"]["ports"][0]["nodePort"] = 30080
    np["spec"]["ports"][1]["nodePort"] = 30081
    plain = service("plain", "x", "10.96.1.6", [("web", 80, 8080)])
    plain["spec"]["type"] = "NodePort"
    plain["spec"]["ports"][0]["nodePort"] = 30090  # not annotated
    udp = service("dns", "x", "10.96.1.7", [("dns", 53, 53)], {"l7scope.io/logging": "true"},
                  protocol="UDP")
    udp["spec"]["ports"][0]["nodePort"] = 30053
    c = cache_with(np, plain, udp)
    assert select(c, "Enabled", "node-a").nodeports == {30080, 30081}
    assert 30090 in select(c, "EnabledAllServices", "node-a").nodeports
    assert select(cache_with(), "Enabled", "node-a").nodeports == frozenset()
