"""The /stats contract (contracts.status): both producers publish exactly their typed shape, every
key the readers name is in it, and the canonical counters are read the same way by
`l7scope status` and the demo."""

from __future__ import annotations

from pathlib import Path

from l7scope.collector.config import CollectorSettings
from l7scope.collector.runner import Collector
from l7scope.contracts import status
from l7scope.demo.probe import collector_captured
from l7scope.node.agent import Agent, AgentConfig
from l7scope.status.probe import PartStatus, counters_of


def _keys(part: str) -> set[str]:
    named = {k for sources in status.COUNTERS.values() for s in sources if s.part == part for k in s.keys}
    return named | set(status.COLLECTOR_DROPS if part == status.COLLECTOR else status.NODE_AGENT_DROPS)


def test_every_named_key_is_in_its_shape() -> None:
    assert _keys(status.COLLECTOR) - set(status.CollectorStats.__annotations__) == set()
    assert _keys(status.NODE_AGENT) - set(status.NodeAgentStats.__annotations__) == set()


def test_the_collector_publishes_its_shape(tmp_path: Path) -> None:
    settings = CollectorSettings.load({}, envoy_log=tmp_path / "envoy.log", dial_target=f"unix://{tmp_path}/s")
    stats = Collector(settings).stats()
    assert list(stats) == list(status.CollectorStats.__annotations__)
    assert all(status.number(stats, k) == 0 for k in _keys(status.COLLECTOR))


def test_the_node_agent_publishes_its_shape(tmp_path: Path) -> None:
    agent = Agent(AgentConfig(node_name="node-a", data_dir=str(tmp_path / "data")))
    stats = agent.snapshot()
    assert set(stats) == set(status.NodeAgentStats.__annotations__)
    assert all(status.number(stats, k) == 0 for k in _keys(status.NODE_AGENT))


def test_status_and_demo_read_the_same_counter() -> None:
    coll = {"requests_batched": 7, "lines_read": 9, "lines_skipped": 1, "bad_lines": 2, "flag": True}
    parts = [PartStatus("n", status.COLLECTOR, "a", stats=coll)]
    assert counters_of(parts)["seen"] == collector_captured(coll) == 7
    assert counters_of(parts)["skipped"] == 3
    assert status.number(coll, "flag") is None and status.number(coll, "missing") is None
    assert status.counter("seen", {status.NODE_AGENT: {"requests_seen": 4}}) == 4
    assert status.counter("seen", {}) is None
