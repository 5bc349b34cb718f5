"""The collector process: a thin threaded shell around the pure parts.

Threads: the reader (tail -> decode -> batch; also rotates the log when asked), the reporter
(Reporter.pump with backoff), the optional gRPC ALS server (feeds the same batcher), the
optional status HTTP server, and the caller's thread, which ends an interval every `interval`
seconds (flush -> reporter). One lock guards the batcher.

Read position: after an interval's messages have all left the report buffer, the tail position
at that flush is saved to the state file (atomically). A restarted collector resumes there, so
a restart loses nothing; after a hard kill a few requests may be reported twice, never lost.

Stop (SIGTERM/SIGINT or `stop()`): read what is left, flush once more, give the reporter up to
`drain_timeout` seconds; what is still undelivered is re-read by the next run (position not
advanced past it), or counted as dropped when no state file is kept.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc

from l7scope.collector.batch import Batcher
from l7scope.collector.config import CollectorSettings
from l7scope.collector.decode import decode_block
from l7scope.collector.detail import Picker
from l7scope.collector.report import GrpcSender, Reporter, Send
from l7scope.collector.tail import Position, Tail, rotate_file
from l7scope.contracts import status_metrics
from l7scope.contracts.envoy_log import EnvoyLogLine
from l7scope.contracts.status import COLLECTOR, CollectorStats, StatusEndpoint
from l7scope.proxy import admin

if TYPE_CHECKING:  # Envoy's ALS protos (~6 MB) load only when ALS is on (start())
    from l7scope.collector.als import AlsCounters

log = logging.getLogger(__name__)


def load_position(path: Path) -> Position | None:
    try:
        d = json.loads(path.read_text())
        return Position(int(d["dev"]), int(d["ino"]), int(d["offset"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable state file %s: %s", path, e)
        return None


def save_position(path: Path, pos: Position) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(pos)))
    os.replace(tmp, path)


def reopen_envoy_logs(admin_address: str, timeout: float = 2.0) -> None:
    """Ask Envoy to reopen its access logs (admin `POST /reopen_logs`); the address is
    `unix:/path`, `host:port` or `http://host:port` (`l7scope.proxy.admin`)."""
    try:
        status, _ = admin.request_at(admin_address, "/reopen_logs", method="POST", timeout=timeout)
    except admin.AdminError as e:
        raise OSError(str(e)) from e
    if status != 200:
        raise OSError(f"reopen_logs answered {status}")


class Collector:
    def __init__(self, settings: CollectorSettings, *, send: Send | None = None) -> None:
        self.settings = s = settings
        self.picker = Picker(s.detail) if s.detail_enabled else None
        self.batcher = Batcher(s.requests_per_interval, node_name=s.node_name, picker=self.picker)
        self.lock = threading.Lock()
        self._sender = None if send is not None else GrpcSender(s.dial_target)
        self.reporter = Reporter(send or self._sender or _unreachable, max_buffer=s.report_buffer,
                                 timeout=s.report_timeout)
        self.state_path = s.state_path()
        resume = load_position(self.state_path) if self.state_path else None
        self.tail = (Tail(s.envoy_log, max_lag_bytes=s.max_lag_bytes, start_at_end=s.start_at_end,
                          resume=resume) if s.envoy_log else None)
        self.als_counters: AlsCounters | None = None  # set when ALS starts
        self.stop_event = threading.Event()
        self._wake_reporter = threading.Event()
        self._pos: Position | None = None  # tail position covered by the batcher's content
        self._pending: deque[tuple[int, Position | None]] = deque()  # (messages total, position)
        self._submitted = 0
        self.counters: dict[str, int] = dict.fromkeys((
            "bad_lines", "invalid_lines", "requests_batched", "requests_over_cap", "intervals",
            "messages", "rotations_by_collector", "reopen_failures", "details_sent"), 0)
        self._rotate_pending_since: float | None = None
        self._threads: list[threading.Thread] = []
        self._als_server: grpc.Server | None = None
        self._status: StatusEndpoint | None = None
        self.started = time.monotonic()

    # --- feeding the batcher ------------------------------------------------------------

    def add_lines(self, lines: list[EnvoyLogLine]) -> None:
        """Add decoded lines from any source (the ALS server calls this from its threads)."""
        with self.lock:
            self.counters["requests_over_cap"] += self.batcher.add(lines)
            self.counters["requests_batched"] += len(lines)

    def read_once(self) -> bool:
        """Read and batch one block from the log; False when there was nothing new."""
        tail = self.tail
        if tail is None:
            return False
        block = tail.read()
        if not block:
            self._pos = tail.position()
            return False
        lines, bad = decode_block(block, tail.last_lines)
        with self.lock:
            self.counters["bad_lines"] += bad
            self.counters["requests_over_cap"] += self.batcher.add(lines)
            self.counters["requests_batched"] += len(lines)
            self._pos = tail.position()
        return True

    def _reader(self) -> None:
        poll = self.settings.poll_interval
        while not self.stop_event.is_set():
            try:
                busy = self.read_once()
                self._maybe_rotate()
            except Exception:  # never die on one bad read: count, log, go on
                log.exception("reading %s failed; retrying", self.settings.envoy_log)
                busy = False
            if not busy:
                self.stop_event.wait(poll)

    # --- rotation by the collector --------------------------------------------------------

    def _maybe_rotate(self) -> None:
        s = self.settings
        if not s.rotate_bytes or self.tail is None or s.envoy_log is None:
            return
        now = time.monotonic()
        if self._rotate_pending_since is not None:
            if s.envoy_log.exists():
                self._rotate_pending_since = None  # Envoy reopened: the new file is there
            elif now - self._rotate_pending_since >= 1.0:
                self._reopen(now)  # retry the admin call
            return
        # Rotate only the file we are reading: renaming a newer file that we have not opened
        # yet (someone else rotated it meanwhile) would hide its lines from us.
        if self.tail.current_size() >= s.rotate_bytes and self.tail.reading_path():
            try:
                rotate_file(s.envoy_log)
            except FileNotFoundError:  # rotated by someone else just now
                return
            self.counters["rotations_by_collector"] += 1
            log.info("rotated %s at %d bytes", s.envoy_log, s.rotate_bytes)
            self._reopen(now)

    def _reopen(self, now: float) -> None:
        self._rotate_pending_since = now
        if not self.settings.envoy_admin:
            log.warning("rotated the log but no --envoy-admin is set: Envoy keeps the old file")
            return
        try:
            reopen_envoy_logs(self.settings.envoy_admin)
        except OSError as e:
            self.counters["reopen_failures"] += 1
            log.warning("Envoy POST /reopen_logs failed (will retry): %s", e)

    # --- intervals and reporting ----------------------------------------------------------

    def tick(self) -> int:
        """End the interval: flush the batcher into the reporter. Returns messages queued."""
        with self.lock:
            res = self.batcher.flush()
            pos = self._pos
            self.counters["invalid_lines"] += res.invalid
            self.counters["details_sent"] += res.details
            self.counters["intervals"] += 1
        self.counters["messages"] += len(res.messages)
        self._submitted += len(res.messages)
        self._pending.append((self._submitted, pos))
        if res.messages:
            self.reporter.submit(res.messages)
            self._wake_reporter.set()
        self._commit()
        return len(res.messages)

    def _done_messages(self) -> int:
        c = self.reporter.counters
        return c.reported + c.dropped

    def _commit(self) -> None:
        """Save the position of the newest interval whose messages all left the buffer."""
        done = self._done_messages()
        pos = None
        while self._pending and self._pending[0][0] <= done:
            pos = self._pending.popleft()[1]
        if pos is not None and self.state_path is not None:
            try:
                save_position(self.state_path, pos)
            except OSError as e:
                log.warning("cannot save the read position to %s: %s", self.state_path, e)

    def _report_loop(self) -> None:
        while not self.stop_event.is_set():
            wake = self.reporter.pump(time.monotonic())
            self._wake_reporter.wait(max(0.0, min(wake - time.monotonic(), 1.0)))
            self._wake_reporter.clear()

    # --- status ----------------------------------------------------------------------------

    def stats(self) -> CollectorStats:
        t = self.tail.counters if self.tail else None
        r = self.reporter.counters
        a = self.als_counters
        with self.lock:
            pending = self.batcher.pending_requests
            c = dict(self.counters)
        out: CollectorStats = {
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "lines_read": t.lines_read if t else 0,
            "bytes_read": t.bytes_read if t else 0,
            "bytes_skipped": t.bytes_skipped if t else 0,
            "lines_skipped": t.lines_skipped if t else 0,
            "lag_skips": t.lag_skips if t else 0,
            "rotations_seen": t.rotations if t else 0,
            "truncations": t.truncations if t else 0,
            "partial_lines_dropped": t.partial_dropped if t else 0,
            "bad_lines": c["bad_lines"],
            "invalid_lines": c["invalid_lines"],
            "requests_batched": c["requests_batched"],
            "requests_over_cap": c["requests_over_cap"],
            "intervals": c["intervals"],
            "messages": c["messages"],
            "rotations_by_collector": c["rotations_by_collector"],
            "reopen_failures": c["reopen_failures"],
            "requests_pending": pending,
            "reports_sent": r.reported,
            "reports_failed": r.failed,
            "reports_rejected": r.rejected,
            "reports_retried": r.retried,
            "reports_buffered": self.reporter.buffered,
            "reports_dropped": r.dropped,
            "requests_reported": r.reported_requests,
            "requests_dropped": r.dropped_requests,
            "als_streams": a.streams if a else 0,
            "als_entries": a.entries if a else 0,
            "als_bad_entries": a.bad_entries if a else 0,
            "details_picked": self.picker.picked if self.picker else 0,
            "details_dropped": self.picker.dropped if self.picker else 0,
            "details_sent": c["details_sent"],
        }
        return out

    def healthy(self) -> bool:
        return not self.stop_event.is_set()

    # --- lifecycle --------------------------------------------------------------------------

    def _spawn(self, fn: Any, name: str) -> None:
        t = threading.Thread(target=fn, name=f"collector-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> None:
        s = self.settings
        if self.tail is not None:
            self._spawn(self._reader, "reader")
        self._spawn(self._report_loop, "reporter")
        if s.als_listen:
            from l7scope.collector import als

            self.als_counters = als.AlsCounters()
            self._als_server, _ = als.serve(s.als_listen, self.add_lines, self.als_counters,
                                             tls=s.als_tls)
        if s.status_addr:
            self._status = StatusEndpoint(s.status_addr, self.healthy, self.stats,
                                          metrics=lambda: status_metrics.render(COLLECTOR, self.stats()))
        log.info("collector: log %s -> %s every %.1f s (cap %s, node %s)", s.envoy_log,
                 s.dial_target, s.interval, s.requests_per_interval, s.node_name)

    def run(self) -> None:
        """Start, then end an interval every `interval` seconds until `stop()`; then shut down."""
        self.start()
        interval = self.settings.interval
        next_tick = time.monotonic() + interval
        while not self.stop_event.wait(max(0.0, next_tick - time.monotonic())):
            self.tick()
            next_tick += interval
            if next_tick < time.monotonic():  # we were stalled: do not tick in a burst
                next_tick = time.monotonic() + interval
        self.shutdown()

    def stop(self, *_: Any) -> None:
        self.stop_event.set()
        self._wake_reporter.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: final flush and exit", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _await_envoy_exit(self) -> None:
        """In a pod, Envoy gets its SIGTERM with ours and writes its buffered access-log lines
        (up to `buffer_flush_interval`) as it exits: read the log once Envoy's admin stops
        answering, at most `envoy_exit_wait` s (Envoy left running: the log is read as it is)."""
        address, wait = self.settings.envoy_admin, self.settings.envoy_exit_wait
        if not address or wait <= 0:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                admin.request_at(address, "/ready", timeout=0.5)
            except admin.AdminError:
                return  # gone (refused, no socket): its log is complete
            time.sleep(0.1)

    def shutdown(self) -> None:
        self.stop_event.set()
        self._wake_reporter.set()
        for t in self._threads:
            if t.name in ("collector-reader", "collector-reporter"):
                t.join(timeout=10)
        if self._als_server is not None:
            self._als_server.stop(grace=1).wait()
        self._await_envoy_exit()
        for _ in range(1000):  # what Envoy wrote before we stopped
            if not self.read_once():
                break
        self.tick()
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.reporter.buffered and time.monotonic() < deadline:
            wake = self.reporter.pump(time.monotonic())
            time.sleep(max(0.0, min(wake - time.monotonic(), 0.2)))
        self._commit()
        left = self.reporter.buffered
        if left:
            if self.state_path is not None:
                log.warning("%d messages undelivered at exit: the next run reads them again", left)
            else:
                n = self.reporter.drop_all()
                log.warning("%d messages (%d requests) undelivered at exit: dropped", left, n)
        log.info("collector stopped: %s", json.dumps(self.stats()))
        if self._status is not None:
            self._status.close()
        if self.tail is not None:
            self.tail.close()
        if self._sender is not None:
            self._sender.close()


def _unreachable(msg: Any, timeout: float) -> bool:
    raise AssertionError("no sender")
