"""`GET /metrics` of the collector and the node agent: their `/stats` counters (contracts/status.py)
in Prometheus text, built with `prometheus_client` (docs/metrics.md lists the names).

Every numeric top-level `/stats` key `k` of part `p` becomes `l7scope_<p>_<k>` (`-` -> `_`): a
counter (`_total`) unless it is a current value in `GAUGES`; booleans are gauges (0/1). The drop
counters (`COLLECTOR_DROPS`, `NODE_AGENT_DROPS`) are also one counter
`l7scope_<p>_dropped_total{counter="<k>"}`, so one query sums every drop of a part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from l7scope.contracts.status import COLLECTOR, COLLECTOR_DROPS, NODE_AGENT, NODE_AGENT_DROPS

#: `/stats` keys that are current values, not counts since start.
GAUGES: Final = frozenset({"uptime_seconds", "requests_pending", "reports_buffered", "intake_queue",
                           "spool_batches", "spool_bytes", "selected_services", "shipping",
                           "envoy_ready"})
DROPS: Final = {COLLECTOR: COLLECTOR_DROPS, NODE_AGENT: NODE_AGENT_DROPS}


class _Stats(Collector):
    def __init__(self, part: str, stats: Mapping[str, Any]) -> None:
        self.part, self.stats = part, stats

    def collect(self) -> Iterable[Metric]:
        prefix = "l7scope_" + self.part.replace("-", "_") + "_"
        out: list[Metric] = []
        for key in sorted(self.stats):
            v = self.stats[key]
            if isinstance(v, bool):
                g = GaugeMetricFamily(prefix + key, f"/stats {key} (1 = true)")
                g.add_metric([], float(v))
                out.append(g)
            elif isinstance(v, int | float):
                cls = GaugeMetricFamily if key in GAUGES else CounterMetricFamily
                m = cls(prefix + key, f"/stats {key}")
                m.add_metric([], float(v))
                out.append(m)
        drops = CounterMetricFamily(prefix + "dropped", "Drop counters of /stats, by key.",
                                    labels=("counter",))
        for key in DROPS.get(self.part, ()):
            v = self.stats.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                drops.add_metric([key], float(v))
        out.append(drops)
        return out


def render(part: str, stats: Mapping[str, Any]) -> bytes:
    """Prometheus text of one part's `/stats` (COLLECTOR or NODE_AGENT)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Stats(part, stats))
    return generate_latest(registry)
