"""The latest node status report per node (contracts/nodestats.py), for `/metrics` and `/status`.

Bounded: at most `max_nodes` nodes (a report from one more node is refused and counted, never
stored), each forgotten `ttl` seconds after its last report, so a node that is gone stops being
exported. Thread-safe; time is injected. With several server replicas each keeps what the
agents sent it (an agent ships to one replica at a time, and reconnects each minute): Prometheus
scraping every replica sees each node's latest report on the replica that has it, and `max by
(node)` over replicas gives one value (docs/metrics.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from l7scope.contracts import nodestats, status_metrics
from l7scope.contracts.nodestats import NodeStatsReport

MAX_NODES: Final = 10_000


class NodeStatsTable(Collector):
    def __init__(self, max_nodes: int = MAX_NODES, ttl: float = nodestats.TTL_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_nodes, self.ttl, self.clock = max_nodes, ttl, clock
        self._lock = threading.Lock()
        self._nodes: dict[str, tuple[float, NodeStatsReport]] = {}
        self.reports = 0
        self.refused = 0  # reports from a node over max_nodes

    def put(self, report: NodeStatsReport) -> bool:
        """Keep `report` as its node's latest; False when the table is full of other nodes."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            if report.node not in self._nodes and len(self._nodes) >= self.max_nodes:
                self.refused += 1
                return False
            self._nodes[report.node] = (now, report)
            self.reports += 1
            return True

    def current(self) -> list[tuple[str, float, NodeStatsReport]]:
        """(node, age in seconds, report) of every node heard from within the TTL, by name."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            return [(n, round(now - t, 1), r) for n, (t, r) in sorted(self._nodes.items())]

    def _expire(self, now: float) -> None:
        for name in [n for n, (t, _) in self._nodes.items() if now - t > self.ttl]:
            del self._nodes[name]

    def status(self) -> list[dict[str, Any]]:
        """For `/api/v1/status`: per node, the report's age and its parts' drop totals."""
        out = []
        for node, age, r in self.current():
            drops = {part: sum(int(r.parts[part].get(k) or 0)
                               for k in status_metrics.DROPS.get(part, ()))
                     for part in r.parts}
            out.append({"node": node, "age_s": age, "parts": sorted(r.parts), "dropped": drops})
        return out

    def collect(self) -> Iterable[Metric]:
        rows = self.current()
        age = GaugeMetricFamily("l7scope_node_report_age_seconds",
                                "Seconds since the node's agent last reported its counters.",
                                labels=("node",))
        for node, a, _ in rows:
            age.add_metric([node], a)
        out: list[Metric] = [age]
        for part in nodestats.PARTS:
            out += status_metrics.families(
                part, [((node,), r.parts[part]) for node, _, r in rows if part in r.parts],
                labels=("node",))
        return out
