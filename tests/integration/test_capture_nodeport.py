"""NodePort capture: a client outside the cluster network calls `<node>:<nodePort>`.

The node that receives the connection hands NodePorts of selected Services to Envoy's second
listener (`tproxyPort + 1`); Envoy dials `<node>:<nodePort>` itself, from the client's address
(`original_src`) with kube-proxy's masquerade bit in its mark, and the kube-proxy stand-in
DNATs that to an endpoint as it would the client's own connection. Checked, for
`externalTrafficPolicy: Cluster` (endpoint on the other node) and `Local` (endpoint on the
receiving node): the request succeeds through Envoy, is logged exactly once, on the receiving
node, with the external client as source and `<node>:<nodePort>` as destination; an
unannotated NodePort is untouched; `<node>:<tproxyPort + 1>` dialled directly is reset; with
the capture removed (fail open) every NodePort still answers and nothing more is logged.
On an IPv4 and on an IPv6-only lab.
"""

from __future__ import annotations

import pytest
from capture_support import http_get, read_log, topology, wait_log

from l7scope.capture import tproxy
from l7scope.contracts.envoy_log import split_address

pytestmark = [pytest.mark.netns, pytest.mark.envoy]


def _hp(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_nodeports_of_selected_services_are_captured_on_the_receiving_node(
        request: pytest.FixtureRequest, family: str) -> None:
    t = topology(request, family)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    local, web, plain = t.add_pod(n1, "local"), t.add_pod(n2, "web"), t.add_pod(n2, "plain")
    for pod in (local, web, plain):
        t.start_server(pod, "http", 8080)
    cluster_svc = t.add_service("web", 80, [(web, 8080)], node_port=30080)
    local_svc = t.add_service("local", 80, [(local, 8080)], node_port=30081,
                              external_traffic_policy="Local")
    t.add_service("plain", 80, [(plain, 8080)], node_port=30082)  # not annotated
    outside = t.add_external("outside")
    node = n1.underlay_ip

    # Without capture: the stand-in's NodePorts work (Cluster masquerades, Local keeps the IP).
    code, h = http_get(t, outside, _hp(node, 30080), "/before")
    assert (code, h.get(":status")) == (0, "200") and h["x-seen-peer"].rsplit(":", 1)[0] == node
    code, h = http_get(t, outside, _hp(node, 30081), "/before")
    assert (code, h.get(":status")) == (0, "200")
    assert h["x-seen-peer"].rsplit(":", 1)[0] == outside.ip

    rules = t.capture(n1, [cluster_svc, local_svc])
    assert tproxy.installed(rules, n1.netns) == tproxy.Selection.of(
        [*cluster_svc.selection_entries(), *local_svc.selection_entries()], [n1.pod_cidr],
        [30080, 30081])
    t.capture(n2, [cluster_svc, local_svc])  # the endpoint's node must not capture it again
    e1, e2 = t.start_envoy(n1), t.start_envoy(n2)

    for port, path in ((30080, "/np-cluster"), (30081, "/np-local")):
        code, h = http_get(t, outside, _hp(node, port), path)
        assert (code, h.get(":status")) == (0, "200"), (port, h)
        assert "x-envoy-upstream-service-time" in h, h  # it went through Envoy
        # kube-proxy's masquerade bit on Envoy's upstream: the endpoint sees one of the node's
        # addresses, the one facing it (Calico's behaviour; for Cluster the same as without
        # capture, for Local it hides the client's address from the endpoint)
        assert h["x-seen-peer"].rsplit(":", 1)[0] in (node, n1.gateway), (port, h)
    code, h = http_get(t, outside, _hp(node, 30082), "/np-plain")
    assert (code, h.get(":status")) == (0, "200") and "x-envoy-upstream-service-time" not in h

    lines = wait_log(e1.settings.access_log_path, 2)
    assert [(ln["request_path"], ln["downstream_local_address"]) for ln in lines] == [
        ("/np-cluster", _hp(node, 30080)), ("/np-local", _hp(node, 30081))]
    for ln in lines:
        assert split_address(ln["downstream_remote_address"])[0] == outside.ip, ln
        assert split_address(ln["upstream_local_address"])[0] == outside.ip, ln
        assert ln["response_code"] in (200, "200"), ln
    assert read_log(e2.settings.access_log_path) == []  # proxied once, where it arrived

    # The NodePort listener dialled directly is refused, not an open proxy.
    code, _ = http_get(t, outside, _hp(node, rules.nodeport_port), "/direct")
    assert code == 7
    assert tproxy.counters(rules, n1.netns)[tproxy.PORT_GUARD] == 1

    # Fail open: Envoy down, rules withdrawn (what the node agent does): NodePorts still work.
    e1.stop()
    t.uncapture(n1)
    for port in (30080, 30081, 30082):
        code, h = http_get(t, outside, _hp(node, port), "/fail-open")
        assert (code, h.get(":status")) == (0, "200"), (port, h)
        assert "x-envoy-upstream-service-time" not in h
    assert len(read_log(e1.settings.access_log_path)) == 2
