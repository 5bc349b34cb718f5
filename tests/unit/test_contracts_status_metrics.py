"""The collector's and node agent's `/metrics` text (contracts/status_metrics.py): counters,
gauges, booleans, the per-part drop counter, and text Prometheus' own parser reads back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from l7scope.contracts.status import COLLECTOR, NODE_AGENT
from l7scope.contracts.status_metrics import render


def _parse(text: bytes) -> dict[str, tuple[str, dict[str, float]]]:
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        out[fam.name] = (fam.type, {",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or
                                    s.name: s.value for s in fam.samples})
    return out


def test_collector_counters_gauges_and_drops() -> None:
    m = _parse(render(COLLECTOR, {"lines_read": 12, "bad_lines": 2, "requests_dropped": 3,
                                  "uptime_seconds": 1.5, "requests_pending": 4, "last_error": "x"}))
    assert m["l7scope_collector_lines_read"] == ("counter", {"l7scope_collector_lines_read_total": 12})
    assert m["l7scope_collector_uptime_seconds"] == ("gauge", {"l7scope_collector_uptime_seconds": 1.5})
    assert m["l7scope_collector_requests_pending"][0] == "gauge"
    assert m["l7scope_collector_dropped"] == ("counter", {"counter=bad_lines": 2,
                                                          "counter=requests_dropped": 3})
    assert not any("last_error" in k for k in m)  # text is not a metric


def test_node_agent_booleans_and_nested_values_left_out() -> None:
    m = _parse(render(NODE_AGENT, {"shipping": True, "envoy_ready": None, "records_dropped": 0,
                                   "capture": {"state": "on"}, "requests_route_other": 5}))
    assert m["l7scope_node_agent_shipping"] == ("gauge", {"l7scope_node_agent_shipping": 1.0})
    assert m["l7scope_node_agent_requests_route_other"][1] == {
        "l7scope_node_agent_requests_route_other_total": 5}
    assert m["l7scope_node_agent_dropped"][1] == {"counter=records_dropped": 0}
    assert "l7scope_node_agent_capture" not in m and "l7scope_node_agent_envoy_ready" not in m
