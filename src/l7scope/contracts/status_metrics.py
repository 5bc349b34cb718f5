"""`GET /metrics` of the collector and the node agent: their `/stats` counters (contracts/status.py)
in Prometheus text, built with `prometheus_client` (docs/metrics.md lists the names).

Every numeric top-level `/stats` key `k` of part `p` becomes `l7scope_<p>_<k>` (`-` -> `_`): a
counter (`_total`) unless it is a current value in `GAUGES`; booleans are gauges (0/1). The drop
counters (`COLLECTOR_DROPS`, `NODE_AGENT_DROPS`) are also one counter
`l7scope_<p>_dropped_total{counter="<k>"}`, so one query sums every drop of a part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def families(part: str, rows: Iterable[tuple[Sequence[str], Mapping[str, Any]]],
             labels: Sequence[str] = ()) -> list[Metric]:
    """The metric families of `part` for `rows` of (label values, `/stats`): one family per
    name, one sample per row (the server renders every node's report this way, with a `node`
    label; a part's own `/metrics` is one row without labels)."""
    prefix = "l7scope_" + part.replace("-", "_") + "_"
    fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    drops = CounterMetricFamily(prefix + "dropped", "Drop counters of /stats, by key.",
                                labels=(*labels, "counter"))
    for values, stats in rows:
        for key in sorted(stats):
            v = stats[key]
            if not isinstance(v, bool | int | float):
                continue
            m = fams.get(key)
            if m is None:
                if isinstance(v, bool) or key in GAUGES:
                    m = GaugeMetricFamily(prefix + key, f"/stats {key}" + (" (1 = true)" if isinstance(v, bool) else ""),
                                          labels=labels)
                else:
                    m = CounterMetricFamily(prefix + key, f"/stats {key}", labels=labels)
                fams[key] = m
            m.add_metric(list(values), float(v))
        for key in DROPS.get(part, ()):
            v = stats.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                drops.add_metric([*values, key], float(v))
    out: list[Metric] = [fams[k] for k in sorted(fams)]
    return [*out, drops]


class _Stats(Collector):
    def __init__(self, part: str, stats: Mapping[str, Any]) -> None:
        self.part, self.stats = part, stats

    def collect(self) -> Iterable[Metric]:
        return families(self.part, [((), self.stats)])


def render(part: str, stats: Mapping[str, Any]) -> bytes:
    """Prometheus text of one part's `/stats` (COLLECTOR or NODE_AGENT)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Stats(part, stats))
    return generate_latest(registry)
