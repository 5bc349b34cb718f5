"""The capture rules as rendered (pure): chains, hooks, priorities and the guards."""

from __future__ import annotations

import pytest

from l7scope.capture import tproxy


def _chains(script: str) -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in script.splitlines():
        line = raw.strip()
        if line.startswith("chain "):
            current = chains.setdefault(line.split()[1], [])
        elif line == "}":
            current = None
        elif current is not None:
            current.append(line)
    return chains


SEL = tproxy.Selection.of([("10.96.0.10", 80), ("10.244.1.2", 8080)], ["10.244.0.0/24", "10.244.0.7"])


def test_table_is_replaced_in_one_transaction_with_both_sets() -> None:
    lines = [ln.strip() for ln in tproxy.render(SEL).splitlines()]
    # one inet table; a previous version's IPv4-only `ip` table goes in the same transaction
    assert lines[:5] == ["table ip l7scope {}", "delete table ip l7scope", "table inet l7scope {}",
                         "delete table inet l7scope", "table inet l7scope {"]
    assert "elements = { 10.244.1.2 . 8080, 10.96.0.10 . 80 }" in lines
    assert "elements = { 10.244.0.0/24, 10.244.0.7/32 }" in lines
    with_np = tproxy.render(tproxy.Selection.of([], [], [30081, 30080]))
    assert "elements = { 30080, 30081 }" in [ln.strip() for ln in with_np.splitlines()]
    empty = tproxy.render(tproxy.Selection())
    assert "elements" not in empty and "set services {" in empty


def test_captured_flows_are_untracked_before_conntrack() -> None:
    chains = _chains(tproxy.render(SEL))
    assert chains["raw_prerouting"] == [
        "type filter hook prerouting priority raw; policy accept;",
        "meta l4proto tcp ip saddr @clients ip daddr . tcp dport @services notrack",
        "meta l4proto tcp ip6 saddr @clients6 ip6 daddr . tcp dport @services6 notrack",
        # a selected Service's NodePort at one of the node's addresses, from anywhere
        'iif != "lo" meta l4proto tcp tcp dport @nodeports fib daddr type local notrack']
    # the proxy's replies to the client (source = the service address, from Envoy's
    # transparent socket; a host-network endpoint answering Envoy's upstream stays tracked)
    assert chains["raw_output"] == [
        "type filter hook output priority raw; policy accept;",
        "meta l4proto tcp ip daddr @clients ip saddr . tcp sport @services"
        " socket transparent 1 notrack",
        "meta l4proto tcp ip6 daddr @clients6 ip6 saddr . tcp sport @services6"
        " socket transparent 1 notrack",
        "meta l4proto tcp tcp sport @nodeports fib saddr type local socket transparent 1 notrack"]


def test_tproxy_rules_or_the_mark_in() -> None:
    rules = tproxy.Rules(tproxy_port=15001, mark=0x400, upstream_mark=0x800)
    chains = _chains(tproxy.render(SEL, rules))
    assert chains["prerouting"] == [
        "type filter hook prerouting priority mangle; policy accept;",
        # replies to Envoy's upstream connections (which carry the client's IP): back to Envoy
        "ct direction reply ct mark & 0x800 == 0x800 meta mark set meta mark | 0x400 accept",
        # Envoy's own upstream packets looped back to a local endpoint: not captured again
        "ct mark & 0x800 == 0x800 accept",
        "meta l4proto tcp socket transparent 1 meta mark set meta mark | 0x400 accept",
        "meta l4proto tcp ip saddr @clients ip daddr . tcp dport @services"
        " meta mark set meta mark | 0x400 tproxy ip to :15001 accept",
        "meta l4proto tcp ip6 saddr @clients6 ip6 daddr . tcp dport @services6"
        " meta mark set meta mark | 0x400 tproxy ip6 to :15001 accept",
        # NodePorts go to the second listener, tproxyPort + 1
        'iif != "lo" meta l4proto tcp tcp dport @nodeports fib daddr type local'
        " meta mark set meta mark | 0x400 tproxy to :15002 accept"]
    assert rules.nodeport_port == 15002
    # Envoy marks its upstream sockets (original_src); the mark is saved in conntrack
    # and a local (host-network) endpoint's replies are rerouted to Envoy (type route)
    assert chains["output"] == [
        "type route hook output priority mangle; policy accept;",
        "meta mark & 0x800 == 0x800 ct mark set ct mark | 0x800",
        "ct direction reply ct mark & 0x800 == 0x800 meta mark set meta mark | 0x400"]
    assert tproxy.Rules().upstream_mark == 0x2000


def test_guards() -> None:
    chains = _chains(tproxy.render(SEL, tproxy.Rules(tproxy_port=15001)))
    # a connection to the transparent port that was not TPROXYed is reset ...
    assert chains["input"][1] == ("tcp dport 15001 ip daddr . tcp dport != @services"
                                  ' counter name "port_guard" reject with tcp reset')
    assert chains["input"][2] == ("tcp dport 15001 ip6 daddr . tcp dport != @services6"
                                  ' counter name "port_guard" reject with tcp reset')
    # a NodePort connection TPROXYed keeps its nodePort; one to 15002 itself was dialled there
    assert chains["input"][3] == 'tcp dport 15002 counter name "port_guard" reject with tcp reset'
    # ... and a captured packet that missed TPROXY never leaves the node
    assert chains["forward"] == [
        "type filter hook forward priority filter; policy accept;",
        "meta l4proto tcp ip saddr @clients ip daddr . tcp dport @services"
        ' counter name "forward_guard" reject with tcp reset',
        "meta l4proto tcp ip6 saddr @clients6 ip6 daddr . tcp dport @services6"
        ' counter name "forward_guard" reject with tcp reset']
    script = tproxy.render(SEL)
    assert "counter forward_guard {}" in script and "counter port_guard {}" in script


def test_ipv6_addresses_go_to_the_ip6_sets() -> None:
    sel = tproxy.Selection.of([("10.96.0.10", 80), ("fd00:96::a", 80)],
                              ["10.244.0.0/24", "fd00:244::/64", "fd00:244:1::5"])
    lines = [ln.strip() for ln in tproxy.render(sel).splitlines()]
    i = lines.index("set services6 {")
    assert lines[i + 1:i + 3] == ["type ipv6_addr . inet_service", "elements = { fd00:96::a . 80 }"]
    i = lines.index("set clients6 {")
    assert lines[i + 1:i + 4] == ["type ipv6_addr", "flags interval",
                                  "elements = { fd00:244:1::5/128, fd00:244::/64 }"]
    i = lines.index("set services {")
    assert lines[i + 2] == "elements = { 10.96.0.10 . 80 }"


def test_selection_validates_addresses_and_ports() -> None:
    with pytest.raises(ValueError):
        tproxy.Selection.of([("10.96.0.10", 0)], [])
    with pytest.raises(ValueError):
        tproxy.Selection.of([("10.96.0.300", 80)], [])
    v6 = tproxy.Selection.of([("FD00::0:1", 80)], ["fd00:244::5/64"])
    assert v6.services == {("fd00::1", 80)} and v6.clients == {"fd00:244::/64"}
    with pytest.raises(ValueError):
        tproxy.Selection.of([], [], [65536])
    assert tproxy.Selection.of([], ["10.244.0.9/24"]).clients == frozenset({"10.244.0.0/24"})
