"""Send the node's counters to the server every `interval` (contracts/nodestats.py).

A thread of the node agent: each round it takes the agent's own `/stats` snapshot and, when a
collector status URL is configured, the collector's `/stats` over loopback (a collector that does
not answer is left out of that report and counted), and POSTs them with the shipping credential
and TLS settings. A report is a snapshot, not a record: a failed one is counted and the next round
sends fresher numbers, nothing is queued. `build` is the pure part.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from l7scope.contracts import nodestats
from l7scope.contracts.auth import TokenFileError
from l7scope.contracts.nodestats import NodeStatsReport
from l7scope.contracts.status import COLLECTOR, NODE_AGENT

log = logging.getLogger(__name__)


@dataclass
class ReporterStats:
    sent: int = 0
    errors: int = 0
    collector_unreadable: int = 0
    last_error: str = ""


def build(node: str, agent: Mapping[str, Any], collector: Mapping[str, Any] | None) -> NodeStatsReport:
    parts = {NODE_AGENT: nodestats.numeric(agent)}
    if collector is not None:
        parts[COLLECTOR] = nodestats.numeric(collector)
    return NodeStatsReport(node=node, parts=parts)


class StatsReporter:
    def __init__(self, server_url: str, node: str, snapshot: Callable[[], Mapping[str, Any]],
                 headers: Callable[[], dict[str, str]], verify: ssl.SSLContext | bool = True,
                 collector_stats_url: str | None = None,
                 interval: float = nodestats.REPORT_SECONDS, timeout: float = 5.0) -> None:
        self.url = server_url.rstrip("/") + nodestats.NODE_STATS_PATH
        self.node, self.snapshot, self.headers = node, snapshot, headers
        self.verify, self.collector_stats_url = verify, collector_stats_url
        self.interval, self.timeout = interval, timeout
        self.stats = ReporterStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="l7scope-stats-report", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, verify=self.verify) as client, \
                httpx.Client(timeout=self.timeout) as local:
            while not self._stop.wait(self.interval):
                self.report_once(client, local)

    def _collector(self, local: httpx.Client) -> Mapping[str, Any] | None:
        if not self.collector_stats_url:
            return None
        try:
            r = local.get(self.collector_stats_url)
            r.raise_for_status()
            data = r.json()
            return data if isinstance(data, dict) else None
        except (httpx.HTTPError, ValueError):
            self.stats.collector_unreadable += 1
            return None

    def report_once(self, client: httpx.Client, local: httpx.Client) -> bool:
        report = build(self.node, self.snapshot(), self._collector(local))
        try:
            r = client.post(self.url, content=nodestats.encode(report),
                            headers={**self.headers(), "Content-Type": nodestats.CONTENT_TYPE})
            if r.status_code >= 300:
                raise httpx.HTTPStatusError(f"{r.status_code}: {r.text[:200]}", request=r.request,
                                            response=r)
        except (httpx.HTTPError, OSError, TokenFileError) as e:
            self.stats.errors += 1
            if str(e) != self.stats.last_error:
                log.warning("node stats report to %s failed: %s", self.url, e)
            self.stats.last_error = str(e)
            return False
        self.stats.sent += 1
        self.stats.last_error = ""
        return True
