"""Shipper + spool against a real local HTTP server (records batches, dedups ids, fails on
demand): spool-before-send, delete after 2xx, replay after restart, retry with backoff, duplicate
batches, permanent errors, bounded spool with counted drops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from l7scope.contracts import bulk
from l7scope.contracts.record import L7Record, decode_record
from l7scope.node.shipper import Shipper


class BulkServer:
    """A tiny bulk endpoint: stores each batch id once; `fail_with` forces a status."""

    def __init__(self) -> None:
        self.batches: dict[str, list[L7Record]] = {}
        self.posts = 0
        self.fail_with: int | None = None
        srv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                srv.posts += 1
                if srv.fail_with:
                    self.send_response(srv.fail_with)
                    self.end_headers()
                    return
                bid = self.headers[bulk.BATCH_ID_HEADER]
                dup = bid in srv.batches
                recs = [decode_record(line) for line in body.splitlines() if line]
                if not dup:
                    srv.batches[bid] = recs
                out = json.dumps({"accepted": 0 if dup else len(recs), "rejected": [],
                                  "duplicate": dup}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        return sum(r.count for recs in self.batches.values() for r in recs)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[BulkServer]:
    s = BulkServer()
    yield s
    s.close()


def recs(n: int, count: int = 1) -> list[L7Record]:
    return [L7Record(start_time=1, end_time=2, count=count, url=f"svc/{i}") for i in range(n)]


def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_ships_and_empties_spool(server: BulkServer, tmp_path: Path) -> None:
    sh = Shipper(server.url, tmp_path, "node-a")
    sh.start()
    try:
        sh.submit(recs(3))
        sh.submit(recs(2, count=5))
        wait_for(lambda: sh.stats.spool_batches == 0)
    finally:
        sh.stop()
    assert server.count() == 3 + 10
    assert (sh.stats.records_spooled, sh.stats.records_shipped) == (5, 5)
    assert not list(tmp_path.glob("*.ndjson"))


def test_spooled_before_send_and_replayed_after_restart(server: BulkServer, tmp_path: Path) -> None:
    server.fail_with = 503
    sh = Shipper(server.url, tmp_path, "node-a", backoff_base=0.01, backoff_cap=0.05)
    sh.start()
    sh.submit(recs(4))
    wait_for(lambda: server.posts >= 3)  # retried
    sh.stop(drain_seconds=0)
    assert sh.stats.send_errors >= 3 and sh.stats.spool_batches == 1
    assert server.count() == 0
    server.fail_with = None
    sh2 = Shipper(server.url, tmp_path, "node-a")  # a new process
    sh2.start()
    try:
        wait_for(lambda: sh2.stats.spool_batches == 0)
    finally:
        sh2.stop()
    assert server.count() == 4


def test_same_batch_id_on_resend_is_counted_once(server: BulkServer, tmp_path: Path) -> None:
    sh = Shipper(server.url, tmp_path, "node-a")
    sh.submit(recs(3))
    (path,) = tmp_path.glob("*.ndjson")
    copy = path.read_bytes()
    with httpx.Client() as client:
        assert sh.send_one(client, path)
        path.write_bytes(copy)  # as if we crashed after the server stored it, before deleting
        assert sh.send_one(client, path)
    assert server.count() == 3
    assert sh.stats.batches_duplicate == 1 and sh.stats.records_shipped == 3


def test_server_down_then_up(tmp_path: Path) -> None:
    srv = BulkServer()
    url = srv.url
    srv.close()  # nothing listens: connection refused
    sh = Shipper(url, tmp_path, "node-a", backoff_base=0.01, backoff_cap=0.05)
    sh.start()
    try:
        sh.submit(recs(2))
        wait_for(lambda: sh.stats.send_errors >= 2)
        assert sh.stats.last_error
    finally:
        sh.stop(drain_seconds=0)
    assert sh.stats.spool_batches == 1


def test_permanent_error_drops_and_counts(server: BulkServer, tmp_path: Path) -> None:
    server.fail_with = 400
    sh = Shipper(server.url, tmp_path, "node-a")
    sh.submit(recs(7))
    (path,) = tmp_path.glob("*.ndjson")
    with httpx.Client() as client:
        assert sh.send_one(client, path)
    assert (sh.stats.records_dropped, sh.stats.spool_batches) == (7, 0)


def test_spool_is_bounded_and_drops_oldest(tmp_path: Path) -> None:
    sh = Shipper("http://127.0.0.1:9", tmp_path, "node-a", max_spool_bytes=3000)
    for _ in range(10):
        sh.submit(recs(2))
    assert sh.stats.spool_bytes <= 3000 + 2000
    assert sh.stats.records_dropped == 2 * sh.stats.batches_dropped > 0
    assert sh.stats.records_spooled == 20
    kept = sum(sh.spool.records_in(p) for p in tmp_path.glob("*.ndjson"))
    assert kept + sh.stats.records_dropped == 20


def test_backoff_grows_with_jitter_and_cap(tmp_path: Path) -> None:
    sh = Shipper("http://x", tmp_path, "n", backoff_base=0.1, backoff_cap=2.0, rng=lambda: 1.0)
    assert [sh.backoff(a) for a in (1, 2, 3, 10)] == [0.1, 0.2, 0.4, 2.0]
    sh = Shipper("http://x", tmp_path, "n", backoff_base=0.1, backoff_cap=2.0, rng=lambda: 0.0)
    assert sh.backoff(2) == 0.1


def test_without_server_nothing_is_spooled(tmp_path: Path) -> None:
    sh = Shipper(None, tmp_path / "spool", "n")
    sh.start()
    sh.submit(recs(3))
    sh.stop()
    assert not (tmp_path / "spool").exists() and sh.stats.records_spooled == 0


def test_rejected_total_is_counted(tmp_path: Path) -> None:
    srv = BulkServer()
    try:
        sh = Shipper(srv.url, tmp_path, "n")
        sh.submit([L7Record(start_time=1, end_time=2, count=1)])
        (path,) = tmp_path.glob("*.ndjson")
        # a server answer listing fewer rejections than its total
        body = json.dumps({"accepted": 1, "rejected": [{"line": 2, "error": "bad"}],
                           "rejected_total": 1500, "duplicate": False}).encode()
        transport = httpx.MockTransport(lambda req: httpx.Response(200, content=body))
        with httpx.Client(transport=transport) as client:
            assert sh.send_one(client, path)
        assert (sh.stats.records_shipped, sh.stats.records_rejected) == (1, 1500)
    finally:
        srv.close()


class KeepAliveServer:
    """HTTP/1.1 with kept-alive connections; records the client port of every POST and answers
    the first `fail_first` with 503 (the connection stays open, as a real server's does)."""

    def __init__(self, fail_first: int) -> None:
        self.ports: list[tuple[int, int]] = []  # (client port, status)
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if len(srv.ports) < fail_first else 200
                srv.ports.append((self.client_address[1], status))
                body = b"" if status != 200 else json.dumps(
                    {"accepted": 1, "rejected": [], "duplicate": False}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_retry_after_a_failure_opens_a_new_connection(tmp_path: Path) -> None:
    """Behind a Service a new connection may reach another server replica (kube-proxy balances
    connections): a failed batch is retried on a new one, successful ones keep theirs."""
    srv = KeepAliveServer(fail_first=2)
    sh = Shipper(srv.url, tmp_path, "node-a", backoff_base=0.01, backoff_cap=0.02)
    sh.start()
    try:
        sh.submit(recs(1))
        wait_for(lambda: sh.stats.spool_batches == 0)
        sh.submit(recs(1))
        sh.submit(recs(1))
        wait_for(lambda: sh.stats.spool_batches == 0)
    finally:
        sh.stop()
        srv.close()
    statuses = [s for _, s in srv.ports]
    assert statuses == [503, 503, 200, 200, 200]
    ports = [p for p, _ in srv.ports]
    assert ports[0] != ports[1] != ports[2]  # each retry on a new connection
    assert ports[2] == ports[3] == ports[4]  # while it works, one kept-alive connection
    assert sh.stats.batches_shipped == 3


def test_an_old_connection_is_replaced_so_shipments_spread_over_replicas(tmp_path: Path) -> None:
    """A kept-alive connection older than reconnect_seconds is closed before the next batch:
    behind a Service the new one may reach a replica added since."""
    srv = KeepAliveServer(fail_first=0)
    now = [0.0]
    sh = Shipper(srv.url, tmp_path, "node-a", reconnect_seconds=60, clock=lambda: now[0])
    sh.start()
    try:
        for advance in (0, 30, 29, 2, 10):  # t = 0, 30, 59, 61 (new), 71
            now[0] += advance
            sh.submit(recs(1))
            wait_for(lambda: sh.stats.spool_batches == 0)
    finally:
        sh.stop()
        srv.close()
    ports = [p for p, _ in srv.ports]
    assert len(ports) == 5 and ports[0] == ports[1] == ports[2] != ports[3] == ports[4]
