"""Collector test support: a real Policy Sync gRPC server on a unix socket that records every
Report(), and hand-built Envoy ALS entries.

The recorder is the receiving end the collector talks to, not a mock of the collector: tests use
it to see exactly what was sent. `successful` can be switched to False to make it refuse reports.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from l7scope.contracts.policysync_pb2 import DataplaneStats, ReportResult
from l7scope.contracts.policysync_pb2_grpc import (
    PolicySyncServicer,
    add_PolicySyncServicer_to_server,
)


class Recorder(PolicySyncServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.messages: list[DataplaneStats] = []
        self.calls = 0
        self.successful = True
        self.lock = threading.Lock()

    def Report(self, request: DataplaneStats, context: Any) -> ReportResult:
        with self.lock:
            self.calls += 1
            if self.successful:
                self.messages.append(request)
            return ReportResult(successful=self.successful)

    def requests(self) -> int:
        with self.lock:
            return sum(s.value for m in self.messages for s in m.stats)

    def entries(self) -> list[Any]:
        with self.lock:
            return [(m, hd) for m in self.messages for hd in m.http_data]

    def wait_requests(self, n: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if got >= n:
                return got
            time.sleep(0.05)
        return self.requests()


class RecorderServer:
    """Start/stop a Recorder on `unix://<path>`; the same Recorder survives restarts."""

    def __init__(self, path: Path, recorder: Recorder | None = None) -> None:
        self.path = path
        self.recorder = recorder or Recorder()
        self.server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> RecorderServer:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add_PolicySyncServicer_to_server(self.recorder, self.server)
        assert self.server.add_insecure_port(self.target) == 1
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0).wait()
            self.server = None
        self.path.unlink(missing_ok=True)


def addr(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def dur(us: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def http_entry(path: str = "/pkg.Svc/Call", code: int | None = 200, total_us: int = 1_250_000,
               grpc_status: str | None = "14") -> accesslog_pb2.HTTPAccessLogEntry:
    cp = accesslog_pb2.AccessLogCommon(
        downstream_remote_address=addr("10.0.0.7", 41000),
        downstream_local_address=addr("10.96.0.20", 8080),
        upstream_remote_address=addr("10.244.1.9", 8080),
        start_time=timestamp_pb2.Timestamp(seconds=1_790_000_000, nanos=123_000_000),
        time_to_first_upstream_tx_byte=dur(1_000),
        time_to_first_upstream_rx_byte=dur(1_201_000),
        time_to_last_downstream_tx_byte=dur(total_us),
    )
    cp.response_flags.upstream_connection_failure = False
    req = accesslog_pb2.HTTPRequestProperties(
        request_method=base_pb2.RequestMethod.Value("POST"), authority="svc.ns:8080",
        path=path, user_agent="grpc-python/1.85", request_id="abc", request_body_bytes=33,
        request_headers_bytes=400)
    resp = accesslog_pb2.HTTPResponseProperties(response_body_bytes=77, response_headers_bytes=90)
    if code is not None:
        resp.response_code.value = code
    if grpc_status is not None:
        resp.response_trailers["grpc-status"] = grpc_status
    return accesslog_pb2.HTTPAccessLogEntry(
        common_properties=cp, request=req, response=resp,
        protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP2)
