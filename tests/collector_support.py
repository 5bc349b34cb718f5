"""Collector test support: a real Policy Sync gRPC server on a unix socket that records every
Report(). (The hand-built Envoy ALS entries are in the test kit, `l7scope.testing.als_entries`.)

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
