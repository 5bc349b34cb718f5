"""The node agent process: the thin shell that wires the pure parts together.

Threads (all daemon threads owned by `Agent`, stopped by `stop()`):
- gRPC Policy Sync server (its own pool) -> bounded intake queue;
- `flush loop`: intake -> fold.py (enrich once per new key, aggregate in columns); every
  `l7LogsFlushInterval` it writes
  `l7.log` and hands the records to the shipper's spool; applies settings changes;
- `control loop` (every 0.25 s): settings file and inventory re-reads, capture reconcile (Envoy
  readiness, fail open), deleted-pod expiry;
- shipper (see shipper.py); status HTTP endpoint (`GET /healthz`, `GET /stats`);
- metadata feeds: functions `feed(cache, stop_event)` run in their own threads until the event is
  set. This is where the Kubernetes watches plug in (`AgentConfig.feeds`); the inventory
  directory is the built-in feed.

On stop: intake closes, what is queued is aggregated and flushed once more, the capture rules are
removed, and the shipper gets a short time to send; unsent batches stay in the spool for the
next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from l7scope.capture import bridge
from l7scope.contracts import nodestats, status_metrics
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts.auth import tls_verify
from l7scope.contracts.detail import DETAIL_BULK_PATH
from l7scope.contracts.detail import encode_records as encode_details
from l7scope.contracts.gcpause import gc_paused
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.contracts.record import L7Record, encode_records
from l7scope.contracts.status import NODE_AGENT, NodeAgentStats, StatusEndpoint
from l7scope.node.aggregate import Aggregator
from l7scope.node.detail import DetailKeeper
from l7scope.node.enrich import Enricher
from l7scope.node.fold import Folder
from l7scope.node.inventory import Inventory
from l7scope.node.l7log_file import L7LogFile
from l7scope.node.metadata import DEFAULT_GRACE_SECONDS, MetadataCache
from l7scope.node.policysync_server import PolicySyncServer
from l7scope.node.selection import CaptureController, capture_rules, envoy_ready_probe
from l7scope.node.settings import SettingsFile
from l7scope.node.shipper import MAX_RECORDS_PER_BATCH, Shipper
from l7scope.node.stats_report import StatsReporter

log = logging.getLogger(__name__)

MetadataFeed = Callable[[MetadataCache, threading.Event], None]
"""A metadata source: fills the cache and keeps it current until the event is set."""

CONTROL_PERIOD = 0.25


DETAIL_SPOOL_BYTES = 64 * 1024 * 1024


#: At stop, how long no Report must come before the intake closes: longer than the collector's
#: wait for Envoy's exit before its final read (collector `envoy_exit_wait`, 2 s), so a regular
#: Report just after SIGTERM does not close the intake before the final one arrives.
FINAL_REPORT_QUIET_S = 2.5


@dataclass
class AgentConfig:
    node_name: str
    settings_path: str | None = None
    inventory_dir: str | None = None
    server_url: str | None = None
    server_token_file: str | None = None  # bearer token for shipping (contracts/auth.py)
    server_ca_file: str | None = None  # CA bundle of an https server
    collector_stats_url: str | None = None  # the collector's /stats, sent with the node's report
    stats_report_seconds: float = nodestats.REPORT_SECONDS
    envoy_admin: str | None = None
    status_addr: str | None = None  # HOST:PORT
    data_dir: str = "/var/lib/l7scope/node"
    netns: str | None = None  # apply capture rules in this netns (tests); None = our own
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    intake_size: int = 10_000
    max_spool_bytes: int = 512 * 1024 * 1024
    feeds: list[MetadataFeed] = field(default_factory=list)


@dataclass
class AgentStats:
    bad_reports: int = 0
    records_flushed: int = 0
    flushes: int = 0
    last_bad_report: str = ""
    control_errors: int = 0
    last_control_error: str = ""


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.settings_file = SettingsFile(cfg.settings_path)
        s = self.settings_file.current
        self.settings: NodeSettings = s
        self.cache = MetadataCache(grace_seconds=cfg.grace_seconds)
        self.enricher = Enricher(self.cache)  # used by the flush loop only
        self.inventory = Inventory(cfg.inventory_dir, self.cache) if cfg.inventory_dir else None
        self.intake: queue.Queue[pb.DataplaneStats] = queue.Queue(maxsize=cfg.intake_size)
        self.server = PolicySyncServer(s.policy_sync_path_prefix, self.intake)
        start = time.time()
        self.aggregator = Aggregator(s.aggregation(), cfg.node_name, start)
        self.folder = Folder(self.aggregator, self.enricher)  # the flush loop's hot path
        self.details = DetailKeeper(s.l7_detail, cfg.node_name, start)
        self.l7log = self._l7log(s)
        self.shipper = Shipper(cfg.server_url, Path(cfg.data_dir) / "spool", cfg.node_name,
                               max_spool_bytes=cfg.max_spool_bytes,
                               token_file=Path(cfg.server_token_file) if cfg.server_token_file else None,
                               verify=tls_verify(Path(cfg.server_ca_file) if cfg.server_ca_file else None))
        # request detail (node/detail.py) goes through its own, smaller spool
        self.detail_shipper = Shipper(
            cfg.server_url, Path(cfg.data_dir) / "spool-detail", cfg.node_name,
            max_spool_bytes=min(cfg.max_spool_bytes, DETAIL_SPOOL_BYTES),
            token_file=self.shipper.token.path, verify=self.shipper.verify,
            bulk_path=DETAIL_BULK_PATH)
        self.reporter = (StatsReporter(cfg.server_url, cfg.node_name, self.snapshot, self.shipper.token.headers,
                                       verify=self.shipper.verify, collector_stats_url=cfg.collector_stats_url,
                                       interval=cfg.stats_report_seconds)
                         if cfg.server_url else None)
        probe = envoy_ready_probe(cfg.envoy_admin) if cfg.envoy_admin else (lambda: True)
        self.capture = CaptureController(self.cache, cfg.node_name, capture_rules(s), probe,
                                         cfg.netns, host_net=lambda: bridge.read_host(cfg.netns))
        self.capture.set_mode(s.tproxy_mode, capture_rules(s), s.ipv6_support)
        self.stats = AgentStats()
        self.started = time.time()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending_settings: NodeSettings | None = None  # taken by the flush loop
        self._pending_capture: NodeSettings | None = None  # taken by the control loop
        self._settings_lock = threading.Lock()
        self._status: StatusEndpoint | None = None

    @staticmethod
    def _l7log(s: NodeSettings) -> L7LogFile | None:
        if not s.l7_logs_file_enabled:
            return None
        return L7LogFile(s.l7_logs_file_directory, s.l7_logs_file_max_files,
                         s.l7_logs_file_max_file_size_mb)

    # ---- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.inventory is not None:
            self.inventory.poll()
        self.capture.stop()  # clean slate: a previous run may have left rules behind
        self.server.start()
        self.shipper.start()
        self.detail_shipper.start()
        if self.reporter is not None:
            self.reporter.start()
        self._spawn("l7scope-flush", self._flush_loop)
        self._spawn("l7scope-control", self._control_loop)
        for i, feed in enumerate(self.cfg.feeds):
            self._spawn(f"l7scope-feed-{i}", self._feed_runner(feed))
        if self.cfg.status_addr:
            self._status = StatusEndpoint(self.cfg.status_addr, lambda: True, self.snapshot,
                                          metrics=lambda: status_metrics.render(NODE_AGENT, self.snapshot()))
        if self.cfg.envoy_admin is None and self.settings.tproxy_mode != "Disabled":
            log.warning("no --envoy-admin: capture cannot fail open when Envoy is down")
        log.info("node agent %s started (tproxyMode %s, flush every %.1fs)",
                 self.cfg.node_name, self.settings.tproxy_mode, self.settings.l7_logs_flush_interval)

    def _feed_runner(self, feed: MetadataFeed) -> Callable[[], None]:
        def run() -> None:
            try:
                feed(self.cache, self._stop)
            except Exception:
                log.exception("metadata feed %s failed", getattr(feed, "__name__", feed))
        return run

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, report_grace: float = 0.0) -> None:
        """Stop; with `report_grace`, first keep taking Reports until FINAL_REPORT_QUIET_S after
        the last one that came in since the stop began (at most `report_grace` s). In a pod the collector
        gets its SIGTERM with ours and sends what it read last in one final Report: without
        the grace, the Policy Sync socket would be gone before it arrived."""
        # fail open first: new connections go straight to their Services (kube-proxy) while
        # the last Reports come in, not to an Envoy that is stopping with us
        self.capture.close()
        if report_grace > 0:
            self._await_final_reports(report_grace)
        self.server.stop()
        self._stop.set()
        if self.reporter is not None:
            self.reporter.stop()
        if self._status is not None:
            self._status.close()
        for t in self._threads:
            t.join(timeout=5)
        self._drain()
        self._flush()
        self.capture.stop()
        self.shipper.stop()
        self.detail_shipper.stop()
        if self.l7log is not None:
            self.l7log.close()
        log.info("node agent stopped")

    def _await_final_reports(self, grace: float, quiet: float = FINAL_REPORT_QUIET_S) -> None:
        def reports() -> int:
            st = self.server.stats
            return st.reports_received + st.reports_dropped
        seen, changed = reports(), None
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            n = reports()
            if n != seen:
                seen, changed = n, time.monotonic()
            elif changed is not None and time.monotonic() - changed >= quiet:
                break
            time.sleep(0.05)
        log.info("stopping: took Reports for %.1fs more", grace - max(0.0, deadline - time.monotonic()))

    # ---- flush loop -------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        next_flush = time.monotonic() + self.settings.l7_logs_flush_interval
        while not self._stop.is_set():
            try:
                ds = self.intake.get(timeout=max(0.0, min(0.2, next_flush - time.monotonic())))
                with gc_paused():  # new keys allocate tuples and dicts in bursts, no cycles
                    self._process(ds)
                    self._drain(limit=1000)
            except queue.Empty:
                pass
            self._take_settings()
            now = time.monotonic()
            if now >= next_flush:
                self._flush()
                interval = self.settings.l7_logs_flush_interval
                next_flush = max(next_flush + interval, now + interval / 2)

    def _drain(self, limit: int = 1_000_000) -> None:
        for _ in range(limit):
            try:
                ds = self.intake.get_nowait()
            except queue.Empty:
                return
            self._process(ds)

    def _process(self, ds: pb.DataplaneStats) -> None:
        try:
            self.folder.add(ds)
            self.details.add(ds, self.enricher, self.aggregator)
        except Exception as e:  # one bad Report must not stop the agent
            self.stats.bad_reports += 1
            if not self.stats.last_bad_report:
                log.exception("bad Report from %s:%s -> %s:%s", ds.src_ip, ds.src_port,
                              ds.dst_ip, ds.dst_port)
            self.stats.last_bad_report = f"{type(e).__name__}: {e}"

    def _flush(self) -> None:
        now = time.time()
        records: list[L7Record] = self.aggregator.flush(now)
        self._flush_details(now)
        self.stats.flushes += 1
        if not records:
            return
        self.stats.records_flushed += len(records)
        if self.l7log is not None:
            self.l7log.write(encode_records(records), len(records))
        try:
            self.shipper.submit(records)
        except OSError as e:
            self.shipper.stats.batches_dropped += 1
            self.shipper.stats.records_dropped += len(records)
            log.error("cannot spool %d records: %s", len(records), e)

    def _flush_details(self, now: float) -> None:
        details = self.details.flush(now)
        if not details:
            return
        try:
            for i in range(0, len(details), MAX_RECORDS_PER_BATCH):
                chunk = details[i: i + MAX_RECORDS_PER_BATCH]
                self.detail_shipper.submit_body(encode_details(chunk), len(chunk))
        except OSError as e:
            self.detail_shipper.stats.batches_dropped += 1
            self.detail_shipper.stats.records_dropped += len(details)
            log.error("cannot spool %d detail records: %s", len(details), e)

    def _take_settings(self) -> None:
        with self._settings_lock:
            new, self._pending_settings = self._pending_settings, None
        if new is None:
            return
        old, self.settings = self.settings, new
        self.aggregator.settings = new.aggregation()
        self.details.settings = new.l7_detail
        if (old.l7_logs_file_enabled, old.l7_logs_file_directory, old.l7_logs_file_max_files,
                old.l7_logs_file_max_file_size_mb) != (
                new.l7_logs_file_enabled, new.l7_logs_file_directory, new.l7_logs_file_max_files,
                new.l7_logs_file_max_file_size_mb):
            if self.l7log is not None:
                self.l7log.close()
            self.l7log = self._l7log(new)
        if old.policy_sync_path_prefix != new.policy_sync_path_prefix:
            log.warning("policySyncPathPrefix changed to %s: takes effect after a restart",
                        new.policy_sync_path_prefix)
        log.info("settings changed: tproxyMode %s, flush every %.1fs", new.tproxy_mode,
                 new.l7_logs_flush_interval)

    # ---- control loop -----------------------------------------------------------------------
    def _control_loop(self) -> None:
        while not self._stop.is_set():
            self.control_step()
            self._stop.wait(CONTROL_PERIOD)

    def apply_settings(self, new: NodeSettings) -> None:
        """Use new settings (from the settings file, or a cluster feed such as H5's
        `l7scope.node.cluster_feed.start_watches(kube, agent.cache, agent.apply_settings)`)."""
        with self._settings_lock:
            self._pending_settings = new
            self._pending_capture = new

    def control_step(self) -> None:
        try:
            new = self.settings_file.poll()
            if new is not None:
                self.apply_settings(new)
            with self._settings_lock:
                capture, self._pending_capture = self._pending_capture, None
            if capture is not None:
                if capture_rules(capture) != self.capture.rules:
                    # Envoy listens on the old port and marks with the old mark until it is
                    # restarted with a new config (the operator rolls the DaemonSet), so the
                    # rules keep the values Envoy was started with.
                    log.warning("tproxyPort/tproxyMark/tproxyUpstreamConnMark changed: takes "
                                "effect after a restart (with Envoy's new config)")
                if capture.ipv6_support != self.capture.ipv6:
                    # the same for ipv6Support: Envoy's IPv6 listener comes with its new config
                    log.warning("ipv6Support changed: takes effect after a restart (with "
                                "Envoy's new config)")
                self.capture.set_mode(capture.tproxy_mode, self.capture.rules)
            if self.inventory is not None:
                self.inventory.poll()
            self.capture.step()
            self.cache.expire()
        except Exception as e:  # the control loop must keep running (fail open depends on it)
            self.stats.control_errors += 1
            if str(e) != self.stats.last_control_error:
                log.exception("control loop step failed")
            self.stats.last_control_error = str(e)

    # ---- status -----------------------------------------------------------------------------
    def snapshot(self) -> NodeAgentStats:
        agg, sh, cap, intake = (self.aggregator.totals, self.shipper.stats, self.capture.stats,
                                self.server.stats)
        return {
            "node": self.cfg.node_name,
            "uptime_seconds": round(time.time() - self.started, 1),
            "reports_received": intake.reports_received,
            "reports_dropped": intake.reports_dropped,
            "requests_dropped_at_intake": intake.requests_dropped,
            "intake_queue": self.intake.qsize(),
            "bad_reports": self.stats.bad_reports,
            "control_errors": self.stats.control_errors,
            "requests_seen": agg.requests_seen,
            "requests_logged": agg.requests_logged,
            "requests_overflow": agg.requests_overflow,
            "requests_unlogged": agg.requests_unlogged,
            "requests_route_other": agg.requests_route_other,
            "records_flushed": self.stats.records_flushed,
            "records_written": self.l7log.lines_written if self.l7log else 0,
            "l7log_write_errors": self.l7log.write_errors if self.l7log else 0,
            "records_spooled": sh.records_spooled,
            "records_shipped": sh.records_shipped,
            "records_rejected": sh.records_rejected,
            "records_dropped": sh.records_dropped,
            "batches_duplicate": sh.batches_duplicate,
            "spool_batches": sh.spool_batches,
            "shipping": self.shipper.url is not None,
            "spool_bytes": sh.spool_bytes,
            "ship_error": sh.last_error,
            "stats_reports_sent": self.reporter.stats.sent if self.reporter else 0,
            "stats_report_errors": self.reporter.stats.errors if self.reporter else 0,
            "selected_services": cap.selected_services,
            "capture_state": cap.state,
            "envoy_ready": cap.envoy_ready,
            "capture_bridged_clients": cap.bridged_clients,
            "capture": asdict(cap),
            "metadata": dict(self.cache.stats.counts),
            "settings": {"tproxyMode": self.settings.tproxy_mode,
                         "l7LogsFlushInterval": self.settings.l7_logs_flush_interval,
                         "reload_errors": self.settings_file.errors,
                         "last_error": self.settings_file.last_error},
            "details_received": self.details.stats.received,
            "details_kept": self.details.stats.kept,
            "details_off": self.details.stats.off,
            "details_dropped": self.details.stats.dropped,
            "details_bad": self.details.stats.bad,
            "details_shipped": self.detail_shipper.stats.records_shipped,
            "details_ship_dropped": (self.detail_shipper.stats.records_dropped
                                     + self.detail_shipper.stats.records_rejected),
            "inventory": ({"reloads": self.inventory.reloads, "errors": self.inventory.errors,
                           "last_error": self.inventory.last_error} if self.inventory else None),
        }
