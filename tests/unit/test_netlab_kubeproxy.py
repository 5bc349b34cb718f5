"""The kube-proxy stand-in's nft script (pure rendering)."""

from __future__ import annotations

from l7scope.netlab import kubeproxy
from l7scope.netlab.kubeproxy import ServiceRule


def test_render_dnat_rules_like_kube_proxy() -> None:
    script = kubeproxy.render([
        ServiceRule("10.96.0.11", 443, [("10.244.0.3", 8443)]),
        ServiceRule("10.96.0.10", 80, [("10.244.0.2", 8080), ("10.244.1.2", 8081)]),
        ServiceRule("10.96.0.12", 80, []),
    ])
    lines = [ln.strip() for ln in script.splitlines()]
    assert lines[:3] == ["table inet netlab_kubeproxy {}", "delete table inet netlab_kubeproxy",
                         "table inet netlab_kubeproxy {"]
    assert ("ip daddr 10.96.0.10 tcp dport 80 dnat ip to numgen inc mod 2 map "
            "{ 0 : 10.244.0.2 . 8080, 1 : 10.244.1.2 . 8081 }") in lines
    assert "ip daddr 10.96.0.11 tcp dport 443 dnat ip to 10.244.0.3:8443" in lines
    assert not any("10.96.0.12" in ln for ln in lines)  # no endpoints, no rule
    # Like kube-proxy, every packet of a new connection is DNATed: nothing is skipped for a
    # mark (the capture rules must cope with that, see capture/tproxy.py).
    pre = lines[lines.index("chain prerouting {"):]
    assert pre[1:3] == ["type nat hook prerouting priority dstnat; policy accept;", "jump services"]
    assert not any("return" in ln for ln in lines)
    assert "type nat hook output priority -100; policy accept;" in lines
    # hairpin: an endpoint calling its own Service gets kube-proxy's masquerade bit
    assert ("ip daddr 10.96.0.10 tcp dport 80 ip saddr { 10.244.0.2, 10.244.1.2 } "
            "meta mark set meta mark | 0x4000") in lines
    assert ("meta mark & 0x4000 == 0x4000 meta mark set meta mark & 0xffffbfff masquerade"
            in lines)


def test_render_nodeports_cluster_and_local() -> None:
    lines = [ln.strip() for ln in kubeproxy.render([
        ServiceRule("10.96.0.10", 80, [("10.244.1.2", 8080)], node_port=30080),
        ServiceRule("10.96.0.11", 80, [("10.244.0.2", 8080), ("10.244.1.3", 8080)],
                    node_port=30081, local_endpoints=[("10.244.0.2", 8080)]),
        ServiceRule("10.96.0.12", 80, [("10.244.1.4", 8080)], node_port=30082,
                    local_endpoints=[]),
    ]).splitlines()]
    # Cluster: any endpoint, masqueraded
    assert "meta nfproto ipv4 fib daddr type local tcp dport 30080 meta mark set meta mark | 0x4000" in lines
    assert "meta nfproto ipv4 fib daddr type local tcp dport 30080 dnat ip to 10.244.1.2:8080" in lines
    # Local: this node's endpoints, the client's address kept; none here: dropped
    assert "meta nfproto ipv4 fib daddr type local tcp dport 30081 dnat ip to 10.244.0.2:8080" in lines
    assert not any("dport 30081 meta mark" in ln for ln in lines)
    assert "meta nfproto ipv4 fib daddr type local tcp dport 30082 drop" in lines


def test_render_ipv6_services() -> None:
    lines = [ln.strip() for ln in kubeproxy.render([
        ServiceRule("fd00:96::a", 80, [("fd00:244::2", 8080)], node_port=30080),
        ServiceRule("fd00:96::b", 80, [("fd00:244::2", 8080), ("fd00:244:1::2", 8080)]),
    ]).splitlines()]
    assert "ip6 daddr fd00:96::a tcp dport 80 dnat ip6 to [fd00:244::2]:8080" in lines
    assert ("ip6 daddr fd00:96::b tcp dport 80 dnat ip6 to numgen inc mod 2 map "
            "{ 0 : fd00:244::2 . 8080, 1 : fd00:244:1::2 . 8080 }") in lines
    assert ("meta nfproto ipv6 fib daddr type local tcp dport 30080 dnat ip6 to"
            " [fd00:244::2]:8080") in lines
