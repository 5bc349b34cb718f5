"""Node status reports (contracts/nodestats.py): the contract's bounds, the server's table
(latest per node, TTL, node bound) and its Prometheus families with a `node` label, and the
agent side's pure report builder. The HTTP path is tests/integration/test_node_stats_report.py."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from l7scope.contracts import nodestats
from l7scope.contracts.nodestats import NodeStatsReport
from l7scope.contracts.status import COLLECTOR, NODE_AGENT
from l7scope.node.stats_report import build
from l7scope.server.node_stats import NodeStatsTable


def report(node: str, shipped: int = 1, **collector: int) -> NodeStatsReport:
    parts = {NODE_AGENT: {"records_shipped": shipped, "records_dropped": 2, "shipping": True,
                          "spool_bytes": 100}}
    if collector:
        parts[COLLECTOR] = dict(collector)
    return NodeStatsReport(node=node, parts=parts)


def test_report_round_trip_and_bounds() -> None:
    r = report("node-a", 5, lines_read=7)
    assert nodestats.decode(nodestats.encode(r)) == r
    bad = [
        b'{"node": "node-a", "parts": {"server": {}}}',                      # unknown part
        b'{"node": "node-a", "parts": {"node-agent": {"Bad-Key": 1}}}',      # key pattern
        b'{"node": "node-a", "parts": {"node-agent": {"x": "text"}}}',       # not a number
        b'{"node": "node-a", "parts": {}, "extra": 1}',                      # unknown field
        b'{"node": "", "parts": {}}',                                       # empty node
        b'{"node": "a b", "parts": {}}',                                    # not a node name
        b"[1, 2]",
    ]
    for body in bad:
        with pytest.raises(msgspec.ValidationError):
            nodestats.decode(body)
    too_many = {f"k{i}": i for i in range(nodestats.MAX_KEYS + 1)}
    with pytest.raises(msgspec.ValidationError):
        nodestats.decode(msgspec.json.encode({"node": "n", "parts": {NODE_AGENT: too_many}}))
    with pytest.raises(msgspec.ValidationError, match="bytes"):
        nodestats.decode(b" " * (nodestats.MAX_BODY_BYTES + 1))


def test_build_keeps_numbers_and_booleans_only() -> None:
    agent = {"node": "n1", "records_shipped": 3, "ship_error": "boom", "envoy_ready": None,
             "shipping": True, "capture": {"state": "active"}, "uptime_seconds": 1.5}
    r = build("n1", agent, {"lines_read": 9, "Weird Key": 1})
    assert r.parts == {NODE_AGENT: {"records_shipped": 3, "shipping": True, "uptime_seconds": 1.5},
                       COLLECTOR: {"lines_read": 9}}
    assert build("n1", agent, None).parts.keys() == {NODE_AGENT}
    big = {f"k{i:03d}": i for i in range(nodestats.MAX_KEYS + 50)}
    assert len(build("n1", big, None).parts[NODE_AGENT]) == nodestats.MAX_KEYS


def test_table_keeps_the_latest_per_node_forgets_silent_nodes_and_is_bounded() -> None:
    now = [1000.0]
    t = NodeStatsTable(max_nodes=2, ttl=60, clock=lambda: now[0])
    assert t.put(report("a", 1)) and t.put(report("b", 1))
    assert t.put(report("a", 7))  # a newer report of a known node replaces the old one
    assert not t.put(report("c"))  # full: refused and counted
    assert t.refused == 1
    assert [(n, r.parts[NODE_AGENT]["records_shipped"]) for n, _, r in t.current()] == [("a", 7), ("b", 1)]
    now[0] += 30
    assert t.put(report("a", 8))
    now[0] += 31  # b silent for 61 s: gone; a heard from 31 s ago
    assert [(n, age) for n, age, _ in t.current()] == [("a", 31.0)]
    assert t.put(report("c"))  # room again
    assert t.status() == [{"node": "a", "age_s": 31.0, "parts": [NODE_AGENT],
                           "dropped": {NODE_AGENT: 2}},
                          {"node": "c", "age_s": 0.0, "parts": [NODE_AGENT],
                           "dropped": {NODE_AGENT: 2}}]


def test_table_renders_every_node_in_one_family_per_name() -> None:
    t = NodeStatsTable(clock=lambda: 50.0)
    t.put(report("a", 3, lines_read=10, bad_lines=1))
    t.put(report("b", 4))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(t)
    text = generate_latest(reg).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    shipped = {s.labels["node"]: s.value for s in fams["l7scope_node_agent_records_shipped"].samples}
    assert shipped == {"a": 3.0, "b": 4.0}
    assert fams["l7scope_node_agent_records_shipped"].type == "counter"
    assert fams["l7scope_node_agent_spool_bytes"].type == "gauge"
    drops = {(s.labels["node"], s.labels["counter"]): s.value
             for s in fams["l7scope_node_agent_dropped"].samples}
    assert drops[("a", "records_dropped")] == 2.0 and drops[("b", "records_dropped")] == 2.0
    lines = {s.labels["node"]: s.value for s in fams["l7scope_collector_lines_read"].samples}
    assert lines == {"a": 10.0}  # b sent no collector part
    cdrops = {s.labels["counter"]: s.value for s in fams["l7scope_collector_dropped"].samples}
    assert cdrops.get("bad_lines") == 1.0
    assert {s.labels["node"] for s in fams["l7scope_node_report_age_seconds"].samples} == {"a", "b"}
    assert text.count("# TYPE l7scope_node_agent_records_shipped_total counter") <= 1
