"""The status endpoint every long-running part serves: `GET /healthz` and `GET /stats` (JSON),
and the names of the counters its readers interpret.

The collector and the node agent each start one on their `--status-addr` (loopback by default);
`l7scope status` (status/probe.py), the demo (demo/probe.py) and the Kubernetes probes read it.
It runs in a daemon thread of its own. `/stats` is a flat JSON object of counters (the
collector's `Collector.stats()`, the node agent's `NodeAgent.snapshot()`); its shape is typed here
(`CollectorStats`, `NodeAgentStats`: mypy checks that the producers build exactly these), and the
keys readers depend on are listed here once (COUNTERS, COLLECTOR_DROPS, NODE_AGENT_DROPS;
`tests/unit/test_contracts_status.py` checks them against the shapes and the producers).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal, NamedTuple, TypedDict

log = logging.getLogger(__name__)

HEALTHZ_PATH: Final = "/healthz"
STATS_PATH: Final = "/stats"
METRICS_PATH: Final = "/metrics"
COLLECTOR: Final = "collector"
NODE_AGENT: Final = "node-agent"


class CollectorStats(TypedDict):
    """`GET /stats` of `l7scope collector` (counters since start)."""

    uptime_seconds: float
    lines_read: int
    bytes_read: int
    bytes_skipped: int
    lines_skipped: int
    lag_skips: int
    rotations_seen: int
    truncations: int
    partial_lines_dropped: int
    bad_lines: int
    invalid_lines: int
    requests_batched: int
    requests_over_cap: int
    intervals: int
    messages: int
    rotations_by_collector: int
    reopen_failures: int
    requests_pending: int
    reports_sent: int
    reports_failed: int
    reports_rejected: int
    reports_retried: int
    reports_buffered: int
    reports_dropped: int
    requests_reported: int
    requests_dropped: int
    als_streams: int
    als_entries: int
    als_bad_entries: int


class NodeAgentStats(TypedDict):
    """`GET /stats` of `l7scope node` (counters since start, plus its current state)."""

    node: str
    uptime_seconds: float
    reports_received: int
    reports_dropped: int
    requests_dropped_at_intake: int
    intake_queue: int
    bad_reports: int
    control_errors: int
    requests_seen: int
    requests_logged: int
    requests_overflow: int
    requests_unlogged: int
    requests_route_other: int
    records_flushed: int
    records_written: int
    l7log_write_errors: int
    records_spooled: int
    records_shipped: int
    records_rejected: int
    records_dropped: int
    batches_duplicate: int
    spool_batches: int
    shipping: bool
    spool_bytes: int
    ship_error: str
    stats_reports_sent: int  # node stats reports the server took (contracts/nodestats.py)
    stats_report_errors: int
    selected_services: int
    capture_state: str
    envoy_ready: bool | None
    capture_bridged_clients: int
    capture: dict[str, Any]
    metadata: dict[str, int]
    settings: dict[str, Any]
    inventory: dict[str, Any] | None


class Source(NamedTuple):
    """Where a canonical counter comes from: a part's `/stats` keys, and how to combine them."""

    part: str  # COLLECTOR | NODE_AGENT
    keys: tuple[str, ...]
    how: Literal["first", "sum"]  # the first key present | the sum of those present


#: Canonical counter -> its sources; the first source with a value wins.
COUNTERS: Final[dict[str, tuple[Source, ...]]] = {
    # requests Envoy logged that the collector parsed
    "seen": (Source(COLLECTOR, ("requests_batched", "lines_read"), "first"),
             Source(NODE_AGENT, ("requests_seen",), "first")),
    # requests the collector handed to the node agent (Policy Sync Report)
    "reported": (Source(COLLECTOR, ("requests_reported",), "first"),),
    # lines or requests the collector could not use (skipped on lag, broken, invalid, dropped)
    "skipped": (Source(COLLECTOR, ("lines_skipped", "bad_lines", "invalid_lines", "requests_dropped"), "sum"),),
    "logged": (Source(NODE_AGENT, ("requests_logged",), "first"),),
    "unlogged": (Source(NODE_AGENT, ("requests_unlogged",), "first"),),
    "spooled": (Source(NODE_AGENT, ("records_spooled",), "first"),),
    "shipped": (Source(NODE_AGENT, ("records_shipped",), "first"),),
}
COUNTER_NAMES: Final[tuple[str, ...]] = tuple(COUNTERS)

#: `/stats` keys that count requests dropped (or not reported) on the way, per part.
COLLECTOR_DROPS: Final = ("bad_lines", "invalid_lines", "lines_skipped", "bytes_skipped", "lag_skips",
                          "partial_lines_dropped", "reports_dropped", "requests_dropped",
                          "reports_rejected")
NODE_AGENT_DROPS: Final = ("reports_dropped", "requests_dropped_at_intake", "bad_reports",
                           "requests_unlogged", "records_dropped", "records_rejected")


def number(stats: Mapping[str, Any], key: str) -> int | None:
    """A counter of a decoded `/stats` object (None when absent or not a number)."""
    v = stats.get(key)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return int(v)
    return None


def counter(name: str, stats_by_part: Mapping[str, Mapping[str, Any]]) -> int | None:
    """A canonical counter from the `/stats` of each part (None: no part reports it)."""
    for src in COUNTERS[name]:
        stats = stats_by_part.get(src.part) or {}
        present = [v for v in (number(stats, k) for k in src.keys) if v is not None]
        if present:
            return sum(present) if src.how == "sum" else present[0]
    return None


class StatusEndpoint:
    def __init__(self, addr: str, healthy: Callable[[], bool],
                 stats: Callable[[], Mapping[str, Any]],
                 metrics: Callable[[], bytes] | None = None) -> None:
        """`metrics`: also serve `/metrics`, Prometheus text (contracts/status_metrics.py)."""
        host, _, port = addr.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if metrics is not None and self.path == METRICS_PATH:
                    text = metrics()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                if self.path == HEALTHZ_PATH:
                    ok = healthy()
                    code, body = (200 if ok else 503), {"ok": ok}
                elif self.path == STATS_PATH:
                    code, body = 200, dict(stats())
                else:
                    code, body = 404, {"error": "not found; try /healthz or /stats"}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="status",
                                        daemon=True)
        self._thread.start()
        log.info("status on http://%s:%d/stats", *self._http.server_address[:2])

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
