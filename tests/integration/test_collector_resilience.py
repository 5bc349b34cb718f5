"""The collector as a real process against a real Policy Sync gRPC server on a unix socket.

An in-test writer plays Envoy: it appends Envoy-shaped lines (contracts.envoy_log.encode_line)
with an O_APPEND handle and reopens its file when the collector calls the admin endpoint
`POST /reopen_logs`, as Envoy does. Each scenario ends with every valid request accounted for:
reported to the server, or counted as skipped by the collector.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from collector_support import RecorderServer
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from l7scope.contracts.envoy_log import EnvoyLogLine, encode_line
from l7scope.testing.als_entries import http_entry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envoy_line(i: int, conn: int = 0) -> bytes:
    """A fixed-length request line (so skipped-line estimates are exact)."""
    return encode_line(EnvoyLogLine(
        reporter="destination", start_time="2026-11-26T10:00:00.000Z", duration=2,
        duration_us=2100, response_code=200 + (i % 3) * 100, response_flags="-",
        bytes_sent=1000, bytes_received=10, user_agent="curl/8.0", request_path=f"/r/{i:08d}",
        request_method="GET", protocol="HTTP/1.1", type="HTTP/1.1",
        downstream_remote_address=f"10.0.{conn % 200}.2:{41000 + conn % 20000}",
        downstream_local_address="10.96.0.10:80", domain="shop.demo", upstream_service_time="1",
    )) + b"\n"


class Writer:
    """Writes like Envoy: one O_APPEND handle, reopened on request (admin /reopen_logs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.written = 0
        self.reopens = 0

    def write(self, data: bytes, lines: int = 1) -> None:
        with self.lock:
            os.write(self.fd, data)
            self.written += lines

    def requests(self, n: int, start: int = 0, conn: int = 0) -> None:
        self.write(b"".join(envoy_line(start + i, conn) for i in range(n)), n)

    def reopen(self) -> None:
        with self.lock:
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.reopens += 1

    def close(self) -> None:
        os.close(self.fd)


class FakeEnvoyAdmin:
    """`POST /reopen_logs` -> Writer.reopen(), like Envoy's admin endpoint."""

    def __init__(self, writer: Writer) -> None:
        w = writer

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path == "/reopen_logs":
                    w.reopen()
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CollectorProc:
    def __init__(self, tmp: Path, target: str, *extra: str) -> None:
        self.log = tmp / "envoy.log"
        self.status_port = free_port()
        self.args = [sys.executable, "-m", "l7scope", "--log-level", "info", "collector",
                     "--envoy-log", str(self.log), "--dial-target", target,
                     "--interval", "0.3", "--node-name", "test-node",
                     "--status-addr", f"127.0.0.1:{self.status_port}", *extra]
        self.out = tmp / "collector.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProc:
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/healthz") is not None, 20, "collector /healthz")
        return self

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.status_port}{path}"
            with urllib.request.urlopen(url, timeout=2) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except OSError:
            return None

    def stats(self) -> dict[str, Any]:
        s = self.get("/stats")
        assert s is not None, self.out.read_text()[-3000:]
        return s

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    srv = RecorderServer(tmp_path / "nodeagent" / "socket")
    srv.path.parent.mkdir()
    srv.start()
    writer = Writer(tmp_path / "envoy.log")
    procs: list[CollectorProc] = []

    def collector(*extra: str) -> CollectorProc:
        c = CollectorProc(tmp_path, srv.target, *extra)
        procs.append(c)
        return c.start()

    try:
        yield {"srv": srv, "rec": srv.recorder, "writer": writer, "collector": collector,
               "tmp": tmp_path}
    finally:
        for c in procs:
            c.kill()
        writer.close()
        srv.stop()


def reported_paths(rec: Any) -> list[str]:
    return sorted(hd.request_path for _, hd in rec.entries() for _ in range(hd.count))


def test_status_endpoint_and_basic_flow(env: dict[str, Any]) -> None:
    c = env["collector"]()
    env["writer"].requests(250, conn=1)
    env["writer"].requests(50, start=250, conn=2)
    assert env["rec"].wait_requests(300) == 300
    assert reported_paths(env["rec"]) == [f"/r/{i:08d}" for i in range(300)]
    ms = env["rec"].messages
    assert {m.reporter_node for m in ms} == {"test-node"}
    assert {(m.src_ip, m.src_port) for m in ms} == {("10.0.1.2", 41001), ("10.0.2.2", 41002)}
    s = c.stats()
    assert s["lines_read"] == 300 and s["requests_batched"] == 300 and s["bad_lines"] == 0
    assert s["requests_reported"] == 300 and s["reports_buffered"] == 0
    assert c.get("/healthz") == {"ok": True}
    assert c.stop() == 0


def test_undecodable_lines_are_counted_and_their_block_kept(env: dict[str, Any]) -> None:
    """Overlong UTF-8, a UTF-8-coded surrogate and nesting past the recursion limit, each in one
    block with good lines: the reader used to drop such a block whole, uncounted (issue 13)."""
    c = env["collector"]()
    w = env["writer"]
    bad = [b'{"request_path": "/\xc0\xaf"}\n', b'{"request_method": "\xed\xa0\x80"}\n',
           b'{"ignored": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"]
    for i, b in enumerate(bad):  # one write per block: good, bad, good
        w.write(envoy_line(2 * i) + b + envoy_line(2 * i + 1), 3)
        wait_for(lambda i=i: c.stats()["lines_read"] >= 3 * (i + 1), 10, "the block read")
    assert env["rec"].wait_requests(6) == 6
    assert reported_paths(env["rec"]) == [f"/r/{i:08d}" for i in range(6)]
    assert c.stats()["bad_lines"] == 3
    # the same counts as Prometheus text on the status port (contracts/status_metrics.py)
    url = f"http://127.0.0.1:{c.status_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    assert "l7scope_collector_bad_lines_total 3.0" in text
    assert 'l7scope_collector_dropped_total{counter="bad_lines"} 3.0' in text
    assert "l7scope_collector_lines_read_total 9.0" in text
    assert c.stop() == 0


def test_rotation_by_the_collector_and_by_someone_else(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    admin = FakeEnvoyAdmin(writer)
    try:
        c = env["collector"]("--rotate-bytes", "60000", "--envoy-admin", admin.url)
        n = 0
        for _ in range(40):  # ~400 KB in small bursts: several size-based rotations
            writer.requests(50, start=n)
            n += 50
            time.sleep(0.02)
        wait_for(lambda: writer.reopens >= 2, 20, "collector-driven rotations")
        os.replace(writer.path, str(writer.path) + ".1")  # an external rotation (logrotate)
        writer.requests(100, start=n)  # still lands in the renamed file
        n += 100
        writer.reopen()
        writer.requests(100, start=n)
        n += 100
        assert env["rec"].wait_requests(n, timeout=30) == n
        assert reported_paths(env["rec"]) == [f"/r/{i:08d}" for i in range(n)]
        s = c.stats()
        assert s["rotations_by_collector"] >= 2 and s["rotations_seen"] >= 3
        assert s["bytes_skipped"] == 0 and s["partial_lines_dropped"] == 0
        assert c.stop() == 0
    finally:
        admin.close()


def test_truncation(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    c = env["collector"]()
    writer.requests(300)
    assert env["rec"].wait_requests(300) == 300
    os.truncate(writer.path, 0)  # copytruncate: same inode, writer keeps appending
    wait_for(lambda: c.stats()["truncations"] == 1, 10, "truncation noticed")
    writer.requests(200, start=300)
    assert env["rec"].wait_requests(500) == 500
    assert reported_paths(env["rec"]) == [f"/r/{i:08d}" for i in range(500)]
    assert c.stop() == 0


def test_collector_restart_loses_nothing(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    c = env["collector"]()
    writer.requests(300)
    assert env["rec"].wait_requests(300) == 300
    assert c.stop() == 0  # SIGTERM: final flush, position saved
    writer.requests(200, start=300)  # written while no collector runs
    c2 = env["collector"]()
    writer.requests(100, start=500)
    assert env["rec"].wait_requests(600) == 600
    time.sleep(1.0)  # nothing more arrives (no duplicates)
    assert reported_paths(env["rec"]) == [f"/r/{i:08d}" for i in range(600)]
    assert c2.stop() == 0


def test_hard_kill_loses_nothing_and_may_repeat(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    c = env["collector"]()
    writer.requests(300)
    assert env["rec"].wait_requests(300) == 300
    time.sleep(1.0)  # a few intervals: the read position is saved
    c.kill()  # SIGKILL: no final flush
    writer.requests(200, start=300)
    c2 = env["collector"]()
    writer.requests(100, start=500)
    wait_for(lambda: set(reported_paths(env["rec"])) >= {f"/r/{i:08d}" for i in range(600)}, 20,
             "every request reported at least once")
    assert c2.stop() == 0


def test_sigterm_flushes_what_is_pending(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    c = env["collector"]("--interval", "3600")  # no tick before the stop
    writer.requests(123)
    wait_for(lambda: c.stats()["requests_batched"] == 123, 10, "lines read")
    assert c.stop() == 0
    assert env["rec"].requests() == 123


def test_malformed_lines_are_counted_and_skipped(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    c = env["collector"]()
    garbage = [b"{not json", b'{"duration": "slow"}', b"[1,2,3]", b"\x00\xff\xfe binary",
               b'{"reporter":"destination","downstream_remote_address":', b"null", b"42",
               envoy_line(10_000)[:-1] + envoy_line(10_001)[:-1]]  # two objects on one line
    n = 0
    for g in garbage:
        writer.requests(50, start=n)
        n += 50
        writer.write(g + b"\n", 0)
        writer.write(b"\n", 0)  # empty lines are ignored, not bad
    assert env["rec"].wait_requests(n) == n
    assert reported_paths(env["rec"]) == [f"/r/{i:08d}" for i in range(n)]
    wait_for(lambda: c.stats()["bad_lines"] == len(garbage), 5, "bad lines counted")
    assert c.stop() == 0


def test_lag_skip_is_counted(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    c = env["collector"]("--max-lag-bytes", "50000")
    writer.requests(100)
    assert env["rec"].wait_requests(100) == 100
    assert c.proc is not None
    c.proc.send_signal(signal.SIGSTOP)  # the collector falls behind
    try:
        writer.requests(1000, start=100)  # well over 50 kB
    finally:
        c.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: c.stats()["lag_skips"] == 1, 10, "the lag skip")
    writer.requests(50, start=1100)
    wait_for(lambda: env["rec"].requests() + c.stats()["lines_skipped"] >= 1150, 20,
             "reported + skipped")
    s = c.stats()
    assert s["lag_skips"] == 1 and s["lines_skipped"] == 1000
    assert env["rec"].requests() + s["lines_skipped"] == writer.written == 1150
    assert c.stop() == 0


def test_als_source_feeds_the_same_batches(env: dict[str, Any]) -> None:
    sock = env["tmp"] / "als.sock"
    c = env["collector"]("--als-listen", f"unix:{sock}")
    ch = grpc.insecure_channel(f"unix://{sock}")
    stub = als_pb2_grpc.AccessLogServiceStub(ch)
    m = als_pb2.StreamAccessLogsMessage()
    m.http_logs.log_entry.extend(http_entry(path=f"/als/{i}") for i in range(40))
    stub.StreamAccessLogs(iter([m]), timeout=10)
    ch.close()
    env["writer"].requests(10)
    assert env["rec"].wait_requests(50) == 50
    assert {hd.type for _, hd in env["rec"].entries()} == {"http", "HTTP/1.1"}
    assert c.stats()["als_entries"] == 40
    assert c.stop() == 0


@pytest.mark.slow
def test_node_agent_down_for_20_seconds(env: dict[str, Any]) -> None:
    writer: Writer = env["writer"]
    srv: RecorderServer = env["srv"]
    c = env["collector"]()
    writer.requests(100)
    assert env["rec"].wait_requests(100) == 100
    srv.stop()
    down_since = time.monotonic()
    n = 100
    while time.monotonic() - down_since < 20:
        writer.requests(25, start=n, conn=n)
        n += 25
        time.sleep(0.5)
    s = c.stats()
    assert s["reports_failed"] > 0 and s["reports_buffered"] > 0 and s["reports_dropped"] == 0
    assert c.proc is not None and c.proc.poll() is None  # still running
    srv.start()
    assert env["rec"].wait_requests(n, timeout=30) == n
    assert reported_paths(env["rec"]) == sorted(f"/r/{i:08d}" for i in range(n))
    assert c.stats()["reports_buffered"] == 0
    assert c.stop() == 0
