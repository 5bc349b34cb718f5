"""Capture on a node whose kube-proxy DNATs every new connection (netlab's stand-in does what
kube-proxy's iptables mode does), and the capture table's two guards.

- ClusterIP capture works because the captured flows are untracked: the client's connection
  has no conntrack entry (so no DNAT), Envoy logs the ClusterIP, and Envoy's own upstream
  connection (from the client's IP) is tracked, DNATed to the endpoint by the kube-proxy
  stand-in and carries the upstream connection mark.
- The same rules without the `notrack` chains are refused (curl exit 7), as on a real node:
  that is the failure the raw chains exist for.
- A connection dialled straight to `<node>:<tproxyPort>` is reset (port guard).
- A captured packet that misses TPROXY is reset instead of leaving the node (forward guard).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import pytest
from capture_support import read_log, topology, wait_log

from l7scope.capture import tproxy
from l7scope.netlab import Node, Pod, Service, Topology
from l7scope.netlab.sh import run
from l7scope.proxy.supervisor import EnvoySupervisor

pytestmark = [pytest.mark.netns, pytest.mark.envoy]


def _curl(t: Topology, pod: Pod, addr: str, path: str = "/x") -> tuple[int, str]:
    res = t.run(pod, ["curl", "-s", "--noproxy", "*", "-m", "3", "-o", "/dev/null",
                      "-w", "%{http_code}", f"http://{addr}{path}"], check=False)
    return res.returncode, res.stdout


class CrossNode(NamedTuple):
    t: Topology
    n1: Node
    client: Pod  # on n1, whose node captures
    web: Pod  # the Service's endpoint, on n2
    svc: Service
    rules: tproxy.Rules
    envoy: EnvoySupervisor


def _cross_node(request: pytest.FixtureRequest) -> CrossNode:
    """Two nodes; a client on n1 calls the Service `web` whose pod runs on n2; n1 captures it."""
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client, web = t.add_pod(n1, "client"), t.add_pod(n2, "web")
    t.start_server(web, "http", 8080)
    svc = t.add_service("web", 80, [(web, 8080)])
    rules = t.capture(n1, [svc])
    return CrossNode(t, n1, client, web, svc, rules, t.start_envoy(n1))


def _conntrack(netns: str) -> list[str]:
    res = run(["conntrack", "-L", "-p", "tcp"], netns, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_clusterip_capture_with_kube_proxy_dnat(request: pytest.FixtureRequest) -> None:
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client, web, local = t.add_pod(n1, "client"), t.add_pod(n2, "web"), t.add_pod(n1, "local")
    t.start_server(web, "http", 8080)
    t.start_server(local, "http", 8080)
    remote_svc = t.add_service("web", 80, [(web, 8080)])
    local_svc = t.add_service("local", 80, [(local, 8080)])
    t.capture(n1, [remote_svc, local_svc])
    envoy = t.start_envoy(n1)

    assert _curl(t, client, remote_svc.address, "/remote") == (0, "200")
    assert _curl(t, client, local_svc.address, "/local") == (0, "200")
    lines = wait_log(envoy.settings.access_log_path, 2)
    assert [(ln["request_path"], ln["downstream_local_address"]) for ln in lines] == [
        ("/remote", remote_svc.address), ("/local", local_svc.address)]

    entries = _conntrack(n1.netns)
    for ln, pod in zip(lines, (web, local), strict=True):
        client_port = ln["downstream_remote_address"].rsplit(":", 1)[1]
        vip = ln["downstream_local_address"]
        vip_ip, vip_port = vip.rsplit(":", 1)
        mine = [e for e in entries if f"dst={vip_ip} " in e]
        # the client's own connection is untracked: no entry, so kube-proxy never DNATed it
        assert not [e for e in mine if f"sport={client_port} dport={vip_port} " in e], entries
        # Envoy's upstream connection (from the client's IP, original_src) is tracked, DNATed by
        # kube-proxy to the endpoint, and carries the upstream mark in conntrack
        upstream_port = ln["upstream_local_address"].rsplit(":", 1)[1]
        (up,) = [e for e in mine if f"sport={upstream_port} dport={vip_port} " in e]
        assert f"src={client.ip} " in up and f"src={pod.ip} " in up, up
        assert f"mark={tproxy.Rules().upstream_mark} " in up, up


def test_without_notrack_kube_proxy_breaks_capture(request: pytest.FixtureRequest) -> None:
    t, n1, client, web, svc, rules, envoy = _cross_node(request)
    assert _curl(t, client, svc.address) == (0, "200")

    # The rules as they were before the raw chains: mangle TPROXY only.
    script = tproxy.render(tproxy.installed(rules, n1.netns) or tproxy.Selection(), rules)
    kept, skip = [], False
    for line in script.splitlines():
        if line.strip().startswith(("chain raw_prerouting", "chain raw_output")):
            skip = True
        if not skip:
            kept.append(line)
        elif line.strip() == "}":
            skip = False
    assert "notrack" not in "\n".join(kept) and "tproxy to" in "\n".join(kept)
    run(["nft", "-f", "-"], n1.netns, stdin="\n".join(kept) + "\n")
    n_logged = len(read_log(envoy.settings.access_log_path))
    # kube-proxy DNATs the SYN Envoy's listener took; the next packet is answered with RST
    assert _curl(t, client, svc.address) == (7, "000")
    assert len(read_log(envoy.settings.access_log_path)) == n_logged


def test_port_guard_resets_direct_connections_to_the_transparent_port(
        request: pytest.FixtureRequest) -> None:
    t, n1, client, web, svc, rules, envoy = _cross_node(request)
    port = rules.tproxy_port
    # from a local pod, and from a pod on another node, to each of the node's addresses
    assert _curl(t, client, f"{n1.gateway}:{port}") == (7, "000")
    assert _curl(t, client, f"{n1.underlay_ip}:{port}") == (7, "000")
    assert _curl(t, web, f"{n1.underlay_ip}:{port}") == (7, "000")
    assert tproxy.counters(rules, n1.netns)[tproxy.PORT_GUARD] == 3
    assert _curl(t, client, svc.address, "/captured") == (0, "200")  # TPROXY still works
    assert [ln["request_path"] for ln in wait_log(envoy.settings.access_log_path, 1)] == [
        "/captured"]
    assert tproxy.counters(rules, n1.netns)[tproxy.PORT_GUARD] == 3


def test_forward_guard_keeps_a_missed_tproxy_packet_on_the_node(
        request: pytest.FixtureRequest) -> None:
    t, n1, client, web, svc, rules, envoy = _cross_node(request)
    assert _curl(t, client, svc.address) == (0, "200")
    assert tproxy.counters(rules, n1.netns)[tproxy.FORWARD_GUARD] == 0

    # Envoy gone and the policy route lost, table still installed: the SYN finds no
    # listener and would be routed out of the node, untracked, still to the ClusterIP.
    envoy.stop()
    mark = f"0x{rules.mark:x}/0x{rules.mark:x}"
    run(["ip", "rule", "del", "fwmark", mark, "lookup", str(rules.route_table)], n1.netns)
    t0 = time.monotonic()
    assert _curl(t, client, svc.address) == (7, "000")  # reset at once, not a timeout
    assert time.monotonic() - t0 < 2
    assert tproxy.counters(rules, n1.netns)[tproxy.FORWARD_GUARD] >= 1
