"""The kube-proxy stand-in's nft script (pure rendering)."""

from __future__ import annotations

from l7scope.netlab import kubeproxy
from l7scope.netlab.kubeproxy import ServiceRule


def test_render_dnat_rules_and_tproxy_skip() -> None:
    script = kubeproxy.render([
        ServiceRule("10.96.0.11", 443, [("10.244.0.3", 8443)]),
        ServiceRule("10.96.0.10", 80, [("10.244.0.2", 8080), ("10.244.1.2", 8081)]),
        ServiceRule("10.96.0.12", 80, []),
    ], skip_mark=0x40)
    lines = [ln.strip() for ln in script.splitlines()]
    assert lines[:3] == ["table ip netlab_kubeproxy {}", "delete table ip netlab_kubeproxy",
                         "table ip netlab_kubeproxy {"]
    assert ("ip daddr 10.96.0.10 tcp dport 80 dnat ip to numgen inc mod 2 map "
            "{ 0 : 10.244.0.2 . 8080, 1 : 10.244.1.2 . 8081 }") in lines
    assert "ip daddr 10.96.0.11 tcp dport 443 dnat ip to 10.244.0.3:8443" in lines
    assert not any("10.96.0.12" in ln for ln in lines)  # no endpoints, no rule
    # Connections marked for TPROXY keep the VIP as destination: prerouting skips them.
    pre = lines[lines.index("chain prerouting {"):]
    assert pre[2] == "meta mark & 0x40 == 0x40 return" and pre[3] == "jump services"
    assert "type nat hook output priority -100; policy accept;" in lines
