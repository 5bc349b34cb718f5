"""Server counters and their Prometheus text rendering (format 0.0.4). Thread-safe. The per-edge
series (workload labels, bytes, latency histograms) are `server/edge_metrics.py`'s
`prometheus_client` collector, rendered after these (docs/metrics.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest

from l7scope.contracts.record import TYPE_UNLOGGED
from l7scope.server.edge_metrics import Acc, EdgeSeries, Labels, count_batch
from l7scope.server.graph import dest_node, source_node
from l7scope.server.node_stats import NodeStatsTable

MAX_EDGE_SERIES: Final = 10_000
OTHER: Final = "other"


def _class(code: str) -> str:
    return f"{code[0]}xx" if len(code) == 3 and code[0] in "12345" else "no_response"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


#: Requests per namespace-level edge (source, target, class), unlogged requests, and the
#: per-edge series (edge_metrics.count_batch) of a batch.
EdgeCounts = tuple[dict[tuple[str, str, str], int], int, dict[Labels, Acc]]


def edge_counts(cols: Mapping[str, Sequence[Any]]) -> EdgeCounts:
    """A batch's (server.columns.ColumnBatch) requests per namespace-level edge and status class,
    and its unlogged requests. Counts are summed per distinct raw key first, so the per-record
    work is one dict update."""
    keys = zip(cols["type"], cols["src_namespace"], cols["src_name_aggr"], cols["src_type"],
               cols["dest_service_namespace"], cols["dest_service_name"], cols["dest_namespace"],
               cols["dest_name_aggr"], cols["dest_type"], cols["response_code"], strict=True)
    raw: dict[tuple[str, ...], int] = {}
    for key, n in zip(keys, cols["count"], strict=True):
        raw[key] = raw.get(key, 0) + n
    local: dict[tuple[str, str, str], int] = {}
    unlogged = 0
    for (typ, sns, sname, stype, dsns, dsname, dns, dname, dtype, code), n in raw.items():
        if typ == TYPE_UNLOGGED:
            unlogged += n
            continue
        edge = (source_node(stype, sns, sname, ()).id,  # namespace-level: nothing expanded
                dest_node(dtype, dns, dname, dsns, dsname, ()).id, _class(code))
        local[edge] = local.get(edge, 0) + n
    return local, unlogged, count_batch(cols)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.edges: dict[tuple[str, str, str], int] = {}
        self.counters: dict[str, int] = {
            "ingest_requests": 0, "records_accepted": 0, "records_rejected": 0,
            "duplicate_batches": 0, "bodies_rejected": 0, "unlogged_requests": 0,
            "unknown_fields_ignored": 0, "bodies_busy": 0, "queries_timed_out": 0,
            "queries_cancelled": 0, "otlp_records_exported": 0, "otlp_records_dropped": 0,
            "otlp_export_retries": 0, "otlp_export_failures": 0,
        }
        self.queries: dict[tuple[str, str], int] = {}
        self.query_seconds: dict[str, float] = {}
        self.retention_runs = 0
        self.retention_last_run: float | None = None
        self.retention_cutoff: int | None = None
        self.series = EdgeSeries()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.series)
        self.nodes = NodeStatsTable()  # the node agents' reports (contracts/nodestats.py)
        self.registry.register(self.nodes)

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def observe_columns(self, cols: Mapping[str, Sequence[Any]]) -> None:
        """Count a batch (server.columns.ColumnBatch) into the per-edge counters."""
        self.add_edges(edge_counts(cols))

    def add_edges(self, counts: EdgeCounts) -> None:
        """Add what `edge_counts` computed for a stored batch."""
        local, unlogged, series = counts
        self.series.add(series)
        with self._lock:
            self.counters["unlogged_requests"] += unlogged
            for edge, n in local.items():
                if edge not in self.edges and len(self.edges) >= MAX_EDGE_SERIES:
                    edge = (OTHER, OTHER, edge[2])
                self.edges[edge] = self.edges.get(edge, 0) + n

    def query(self, kind: str, ok: bool, seconds: float) -> None:
        with self._lock:
            k = (kind, "ok" if ok else "error")
            self.queries[k] = self.queries.get(k, 0) + 1
            self.query_seconds[kind] = self.query_seconds.get(kind, 0.0) + seconds

    def retention(self, now: float, cutoff: int) -> None:
        with self._lock:
            self.retention_runs += 1
            self.retention_last_run = now
            self.retention_cutoff = cutoff

    def render(self, store_records: Callable[[], int | None]) -> str:
        with self._lock:
            c = dict(self.counters)
            edges = sorted(self.edges.items())
            queries = sorted(self.queries.items())
            qsec = dict(self.query_seconds)
            cutoff = self.retention_cutoff
        lines = [
            "# HELP l7scope_edge_requests_total Requests in ingested records, by namespace-level edge and status class.",
            "# TYPE l7scope_edge_requests_total counter",
        ]
        lines += [f'l7scope_edge_requests_total{{source="{_esc(s)}",target="{_esc(t)}",class="{k}"}} {n}'
                  for (s, t, k), n in edges]
        for name, key, help_ in (
            ("l7scope_ingest_requests_total", "ingest_requests", "Bulk requests received."),
            ("l7scope_ingest_duplicate_batches_total", "duplicate_batches", "Bulk batches dropped as duplicates."),
            ("l7scope_ingest_bodies_rejected_total", "bodies_rejected", "Bulk bodies rejected as a whole."),
            ("l7scope_unlogged_requests_total", "unlogged_requests", "Requests reported as not logged in detail."),
            ("l7scope_ingest_unknown_fields_ignored_total", "unknown_fields_ignored",
             "Fields of newer-schema records the server does not know, dropped (the records kept)."),
            ("l7scope_ingest_bodies_busy_total", "bodies_busy",
             "Bulk bodies refused with 503 because the bodies in flight were at their limit."),
            ("l7scope_queries_timed_out_total", "queries_timed_out",
             "Queries cancelled at the statement timeout."),
            ("l7scope_queries_cancelled_total", "queries_cancelled",
             "Queries cancelled because their client disconnected."),
            ("l7scope_otlp_records_exported_total", "otlp_records_exported",
             "Stored records exported as OTLP logs (--otlp-endpoint)."),
            ("l7scope_otlp_records_dropped_total", "otlp_records_dropped",
             "Stored records not exported: the export queue was full or the receiver kept failing."),
            ("l7scope_otlp_export_retries_total", "otlp_export_retries",
             "OTLP export calls retried (the receiver answered a retryable error)."),
            ("l7scope_otlp_export_failures_total", "otlp_export_failures",
             "OTLP export calls given up (retries exhausted, or a non-retryable error)."),
        ):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {c[key]}"]
        lines += ["# HELP l7scope_ingest_records_total Records received, by result.",
                  "# TYPE l7scope_ingest_records_total counter",
                  f'l7scope_ingest_records_total{{result="accepted"}} {c["records_accepted"]}',
                  f'l7scope_ingest_records_total{{result="rejected"}} {c["records_rejected"]}']
        lines += ["# HELP l7scope_queries_total Queries answered, by kind and result.",
                  "# TYPE l7scope_queries_total counter"]
        lines += [f'l7scope_queries_total{{kind="{k}",result="{r}"}} {n}' for (k, r), n in queries]
        lines += ["# HELP l7scope_query_seconds Time spent answering queries.",
                  "# TYPE l7scope_query_seconds summary"]
        for kind in sorted(qsec):
            n = sum(v for (k, _), v in queries if k == kind)
            lines += [f'l7scope_query_seconds_sum{{kind="{kind}"}} {qsec[kind]:.6f}',
                      f'l7scope_query_seconds_count{{kind="{kind}"}} {n}']
        try:
            records = store_records()
        except Exception:
            records = None
        if records is not None:
            lines += ["# HELP l7scope_store_records Records in the store.", "# TYPE l7scope_store_records gauge",
                      f"l7scope_store_records {records}"]
        if cutoff is not None:
            lines += ["# HELP l7scope_retention_deleted_before Epoch seconds of the last retention cutoff.",
                      "# TYPE l7scope_retention_deleted_before gauge",
                      f"l7scope_retention_deleted_before {cutoff}"]
        return "\n".join(lines) + "\n" + generate_latest(self.registry).decode()
