"""OTLP export from the real `l7scope server` process (--otlp-endpoint) to real receivers.

The gRPC receiver is a grpc server built on the official `opentelemetry-proto` service
definitions (LogsService, MetricsService, TraceService); the HTTP receiver decodes the same
protobuf messages from `POST /v1/logs`, `/v1/metrics` and `/v1/traces`. Kept requests (request
detail) with a trace id arrive as spans, every field checked. Shown: every stored record arrives as one LogRecord with
every field; the per-edge request points add up to the stored counts; a duplicate batch is not
exported twice; a receiver that answers UNAVAILABLE twice still gets each record exactly once;
the configured header reaches the receiver.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from contract.harness import free_port
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from l7scope.contracts import detail
from l7scope.contracts.auth import bearer, read_token
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH, CONTENT_TYPE
from l7scope.contracts.fields import COLUMNS
from l7scope.contracts.record import TYPE_UNLOGGED, L7Record, encode_records
from l7scope.server import otlp
from l7scope.testing import record_gen

L7SCOPE = str(Path(sys.executable).parent / "l7scope")


class Received:
    def __init__(self, fail_first: int = 0) -> None:
        self.lock = threading.Lock()
        self.logs: list[Any] = []  # LogRecords in arrival order
        self.resources: list[dict[str, Any]] = []
        self.points: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.spans: list[Any] = []
        self.fail_first = fail_first
        self.calls = 0

    def take_logs(self, req: logs_service_pb2.ExportLogsServiceRequest, headers: dict[str, str]) -> bool:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                return False
            self.headers.append(headers)
            for rl in req.resource_logs:
                self.resources.append(otlp.attributes(rl.resource.attributes))
                for sl in rl.scope_logs:
                    assert sl.scope.name == "l7scope"
                    self.logs.extend(sl.log_records)
            return True

    def take_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self.lock:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        assert m.name == otlp.REQUESTS_METRIC
                        self.points.extend(m.sum.data_points)


    def take_traces(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in req.resource_spans:
                assert otlp.attributes(rs.resource.attributes)["service.name"] == otlp.SERVICE_NAME
                for ss in rs.scope_spans:
                    assert ss.scope.name == "l7scope"
                    self.spans.extend(ss.spans)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, rec: Received) -> None:
        self.rec = rec

    def Export(self, request: Any, context: Any) -> Any:
        self.rec.take_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, rec: Received) -> None:
        self.rec = rec

    def Export(self, request: Any, context: Any) -> Any:
        if not self.rec.take_logs(request, dict(context.invocation_metadata())):
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return logs_service_pb2.ExportLogsServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, rec: Received) -> None:
        self.rec = rec

    def Export(self, request: Any, context: Any) -> Any:
        self.rec.take_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    rec = Received(fail_first=2)
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(rec), srv)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(rec), srv)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(rec), srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield f"127.0.0.1:{port}", rec
    finally:
        srv.stop(0)


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    rec = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/x-protobuf"
            if self.path == "/v1/logs":
                rec.take_logs(logs_service_pb2.ExportLogsServiceRequest.FromString(body),
                              {k.lower(): v for k, v in self.headers.items()})
            elif self.path == "/v1/metrics":
                rec.take_metrics(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
            elif self.path == "/v1/traces":
                rec.take_traces(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", rec
    finally:
        srv.shutdown()
        srv.server_close()


def _server(tmp_path: Path, otlp_args: list[str]) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen([L7SCOPE, "server", "--port", str(port), "--data-dir", str(data), *otlp_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
    return proc, url, bearer(read_token(data / "token"))


def _records(n: int) -> list[L7Record]:
    now = int(time.time())
    return record_gen.records(record_gen.topology(), n, now - 600, now, unlogged_share=0.05)


def _ship(url: str, auth: dict[str, str], recs: list[L7Record], batch_id: str,
          duplicate: bool = False) -> None:
    r = httpx.post(url + BULK_PATH, content=encode_records(recs),
                   headers={**auth, "Content-Type": CONTENT_TYPE, BATCH_ID_HEADER: batch_id})
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is duplicate, r.text
    assert r.json()["accepted"] == (0 if duplicate else len(recs)), r.text


def _wait_for(rec: Received, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rec.lock:
            if len(rec.logs) >= n:
                return
        time.sleep(0.1)
    raise AssertionError(f"{len(rec.logs)} of {n} log records arrived")


def _check(rec: Received, recs: list[L7Record]) -> None:
    assert len(rec.logs) == len(recs)  # exactly once: no duplicate, none lost
    for want, got in zip(recs, rec.logs, strict=True):
        attrs = otlp.attributes(got.attributes)
        for field in COLUMNS:
            assert attrs[otlp.ATTR_PREFIX + field] == getattr(want, field), field
        assert attrs.get(otlp.ATTR_PREFIX + "duration_hist", {}) == want.duration_hist
        assert attrs["http.request.method"] == want.method
        assert attrs["url.original"] == want.url
        assert attrs["k8s.namespace.name"] == want.dest_namespace
        if want.response_code.isdigit():
            assert attrs["http.response.status_code"] == int(want.response_code)
        assert got.time_unix_nano == want.end_time * 1_000_000_000
        assert got.observed_time_unix_nano >= got.time_unix_nano - 3600 * 10**9
        assert got.severity_text == otlp.severity(want.response_code)[1]
        assert got.body.string_value == f"{want.method} {want.url} {want.response_code} x{want.count}"
    assert {r["service.name"] for r in rec.resources} == {otlp.SERVICE_NAME}
    logged = sum(r.count for r in recs if r.type != TYPE_UNLOGGED)
    assert sum(p.as_int for p in rec.points) == logged
    for p in rec.points:
        assert set(otlp.attributes(p.attributes)) == {"source", "target", "class"}


def _metric(url: str, auth: dict[str, str], name: str) -> int:
    text = httpx.get(url + "/metrics", headers=auth).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


def test_grpc_export_every_field_exactly_once_through_retries(
        tmp_path: Path, grpc_receiver: tuple[str, Received]) -> None:
    endpoint, rec = grpc_receiver
    proc, url, auth = _server(tmp_path, ["--otlp-endpoint", endpoint, "--otlp-insecure",
                                         "--otlp-header", "authorization=Bearer receiver-secret"])
    try:
        recs = _records(600)
        _ship(url, auth, recs[:250], "b1")
        _ship(url, auth, recs[250:], "b2")
        _ship(url, auth, recs[:250], "b1", duplicate=True)  # a retried batch: stored once, exported once
        _wait_for(rec, len(recs))
        time.sleep(1.0)  # nothing more may come
        _check(rec, recs)
        assert rec.calls == 2 + 2  # two UNAVAILABLE answers, then one call per stored body
        assert all(h.get("authorization") == "Bearer receiver-secret" for h in rec.headers)
        assert _metric(url, auth, "l7scope_otlp_records_exported_total") == len(recs)
        assert _metric(url, auth, "l7scope_otlp_export_retries_total") == 2
        assert _metric(url, auth, "l7scope_otlp_records_dropped_total") == 0
    finally:
        proc.terminate()
        proc.wait(15)


def test_http_export(tmp_path: Path, http_receiver: tuple[str, Received]) -> None:
    endpoint, rec = http_receiver
    proc, url, auth = _server(tmp_path, ["--otlp-endpoint", endpoint, "--otlp-protocol", "http",
                                         "--otlp-header", "X-Scope=l7"])
    try:
        recs = _records(300)
        _ship(url, auth, recs, "h1")
        _wait_for(rec, len(recs))
        time.sleep(0.5)
        _check(rec, recs)
        assert rec.headers[0]["x-scope"] == "l7"
    finally:
        proc.terminate()
        proc.wait(15)


def test_otlp_options_need_an_endpoint(tmp_path: Path) -> None:
    r = subprocess.run([L7SCOPE, "server", "--data-dir", str(tmp_path), "--otlp-insecure"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--otlp-endpoint" in r.stderr, r.stderr
    r = subprocess.run([L7SCOPE, "server", "--data-dir", str(tmp_path), "--otlp-endpoint", "x:1",
                        "--otlp-header", "novalue"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr, r.stderr


def _details() -> list[detail.DetailRecord]:
    now = int(time.time())
    base = {"start_time": now - 5, "end_time": now, "host": "node-a", "src_namespace": "shop",
            "src_name_aggr": "frontend-*", "src_type": "wep", "dest_namespace": "shop",
            "dest_name_aggr": "cart-*", "dest_type": "wep", "dest_service_namespace": "shop",
            "dest_service_name": "cart", "dest_service_port": 80, "method": "GET",
            "domain": "cart", "protocol": "HTTP/1.1", "type": "HTTP/1.1", "user_agent": "curl/8",
            "upstream_host": "10.1.1.7:8080", "bytes_in": 10, "bytes_out": 900}
    return [
        # an error in a W3C trace, with an allowlisted header
        detail.DetailRecord(**base, url="cart/cart/{int}", path="/cart/42", response_code="503",
                            response_flags="UF", reason="error", duration_us=12_500,
                            time="2026-12-04T20:00:00.250Z", request_id="req-1",
                            trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7",
                            trace_format="w3c", request_headers={"x-tenant": "t1"}),
        # a sampled success in a 64-bit B3 trace (padded to 128 bits)
        detail.DetailRecord(**base, url="cart/cart/{int}", path="/cart/7", response_code="200",
                            reason="sampled", sample_rate=8, duration_us=800,
                            time="2026-12-04T20:00:01Z", request_id="req-2",
                            trace_id="a3ce929d0e0e4736", span_id="0b7e1c2d3e4f5a69", trace_format="b3"),
        # no trace context: kept, stored, but not a span
        detail.DetailRecord(**base, url="cart/x", path="/x", response_code="500", reason="error",
                            duration_us=5, time="2026-12-04T20:00:02Z", request_id="req-3"),
    ]


def _check_spans(rec: Received, recs: list[detail.DetailRecord]) -> None:
    spans = {s.attributes and otlp.attributes(s.attributes)["l7scope.request_id"]: s for s in rec.spans}
    assert sorted(spans) == ["req-1", "req-2"], sorted(spans)  # exactly once each, req-3 has no trace
    err, ok = spans["req-1"], spans["req-2"]
    assert err.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert err.parent_span_id.hex() == "00f067aa0ba902b7"
    assert len(err.span_id) == 8 and err.span_id != err.parent_span_id
    assert ok.trace_id.hex() == "0000000000000000a3ce929d0e0e4736"
    assert ok.parent_span_id.hex() == "0b7e1c2d3e4f5a69"
    assert err.name == "GET /cart/{int}" and err.kind == err.SpanKind.SPAN_KIND_CLIENT
    start = int(datetime.fromisoformat("2026-12-04T20:00:00.250+00:00").timestamp() * 10**9)
    assert (err.start_time_unix_nano, err.end_time_unix_nano) == (start, start + 12_500_000)
    assert err.status.code == err.status.StatusCode.STATUS_CODE_ERROR and err.status.message == "503"
    assert ok.status.code == ok.status.StatusCode.STATUS_CODE_UNSET
    a = otlp.attributes(err.attributes)
    want = recs[0]
    assert a["http.request.method"] == "GET" and a["url.path"] == "/cart/42"
    assert a["http.route"] == "/cart/{int}" and a["http.response.status_code"] == 503
    assert a["server.address"] == "cart" and a["user_agent.original"] == "curl/8"
    assert a["network.peer.address"] == want.upstream_host
    header = next(kv for kv in err.attributes if kv.key == "http.request.header.x-tenant")
    assert [v.string_value for v in header.value.array_value.values] == ["t1"]
    for f in ("reason", "response_flags", "host", "src_namespace", "src_name_aggr",
              "dest_service_name", "dest_service_namespace", "url", "trace_format"):
        assert a["l7scope." + f] == getattr(want, f), f
    assert (a["l7scope.sample_rate"], a["l7scope.bytes_in"], a["l7scope.bytes_out"]) == (1, 10, 900)
    assert otlp.attributes(ok.attributes)["l7scope.sample_rate"] == 8


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_kept_requests_with_a_trace_id_are_exported_as_spans(
        tmp_path: Path, proto: str, grpc_receiver: tuple[str, Received],
        http_receiver: tuple[str, Received]) -> None:
    endpoint, rec = grpc_receiver if proto == "grpc" else http_receiver
    args = ["--otlp-endpoint", endpoint] + (["--otlp-insecure"] if proto == "grpc" else ["--otlp-protocol", "http"])
    proc, url, auth = _server(tmp_path, args)
    try:
        recs = _details()
        for dup in (False, True):  # the same batch again: stored once, exported once
            r = httpx.post(url + detail.DETAIL_BULK_PATH, content=detail.encode_records(recs),
                           headers={**auth, "Content-Type": CONTENT_TYPE, BATCH_ID_HEADER: "d-1"})
            assert r.status_code == 200 and r.json()["duplicate"] is dup, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(rec.spans) < 2 or _metric(url, auth, "l7scope_otlp_spans_exported_total") < 2):
            time.sleep(0.1)
        time.sleep(1)
        _check_spans(rec, recs)
        assert _metric(url, auth, "l7scope_otlp_spans_exported_total") == 2
        assert _metric(url, auth, "l7scope_otlp_spans_dropped_total") == 0
    finally:
        proc.terminate()
        proc.wait(15)
