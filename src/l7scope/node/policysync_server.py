"""gRPC `felix.PolicySync` server on the Policy Sync unix socket (what Felix serves to collectors).

The socket is `<policySyncPathPrefix>/socket` (`contracts.policysync`); a directory the server
creates is made owner-only (0700), an existing one keeps its mode (the prefix is a host path that
may be shared, and chmod-ing e.g. /var/run would break the node), and the socket is made 0660,
so it is not world-writable. The server binds a private name and renames it to `socket`
(atomic), and on stop removes `socket` only while it is still its own: during a DaemonSet roll the
old pod's agent stops after the new one started on the same host path, and must not take the new
agent's socket with it (gRPC itself unlinks the path it bound on shutdown, hence the private name).
`Report(DataplaneStats)`
puts the message into a bounded intake queue and answers `successful: true`; when the queue stays
full for `put_timeout` seconds the Report is refused (`successful: false`) and counted with the
number of requests it carried, so the collector can count it too. Malformed messages cannot
reach us (protobuf decoding happens in grpc), and the handler itself never raises.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts import policysync_pb2_grpc as pb_grpc
from l7scope.node import ingest

log = logging.getLogger(__name__)


#: bytes of a unix socket path (sun_path, without its NUL)
MAX_UNIX_PATH = 107


@dataclass
class IntakeStats:
    reports_received: int = 0
    reports_dropped: int = 0
    requests_dropped: int = 0
    queue_depth: int = 0


class _Servicer(pb_grpc.PolicySyncServicer):  # type: ignore[misc]
    def __init__(self, intake: queue.Queue[pb.DataplaneStats], stats: IntakeStats,
                 put_timeout: float) -> None:
        self._q = intake
        self._stats = stats
        self._timeout = put_timeout
        self._lock = threading.Lock()

    def Report(self, request: pb.DataplaneStats, context: Any) -> pb.ReportResult:
        try:
            self._q.put(request, timeout=self._timeout)
        except queue.Full:
            with self._lock:
                self._stats.reports_dropped += 1
                self._stats.requests_dropped += ingest.requests_in(request)
            return pb.ReportResult(successful=False)
        with self._lock:
            self._stats.reports_received += 1
        return pb.ReportResult(successful=True)


class PolicySyncServer:
    def __init__(self, prefix: str | Path, intake: queue.Queue[pb.DataplaneStats],
                 put_timeout: float = 0.5, workers: int = 4) -> None:
        self.prefix = Path(prefix)
        self.path = self.prefix / "socket"
        self.intake = intake
        self.stats = IntakeStats()
        self._put_timeout = put_timeout
        self._workers = workers
        self._server: grpc.Server | None = None
        self._inode: int | None = None

    def start(self) -> None:
        try:
            self.prefix.mkdir(parents=True)
        except FileExistsError:
            if not self.prefix.is_dir():
                raise
        else:
            os.chmod(self.prefix, 0o700)  # ours: we just created it
        # a short private name: a unix socket path has at most MAX_UNIX_PATH bytes; where even
        # that does not fit, bind `socket` itself (over a stale one) as before
        private = self.prefix / f".{secrets.token_hex(3)}"
        if len(os.fsencode(private.resolve())) > MAX_UNIX_PATH:
            private = self.path
            private.unlink(missing_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers,
                                                        thread_name_prefix="policysync"))
        pb_grpc.add_PolicySyncServicer_to_server(
            _Servicer(self.intake, self.stats, self._put_timeout), server)
        old = os.umask(0o117)
        try:
            if server.add_insecure_port(f"unix://{private.resolve()}") == 0:
                raise OSError(f"cannot listen on {private}")
            server.start()
        finally:
            os.umask(old)
        os.chmod(private, 0o660)
        if private != self.path:
            os.replace(private, self.path)  # over a stale socket or another agent's, atomically
        self._inode = os.stat(self.path).st_ino
        self._server = server
        log.info("Policy Sync API on %s", self.path)

    def owns_socket(self) -> bool:
        """`socket` is still the one this server bound (not replaced by a newer agent's)."""
        try:
            return self._inode is not None and os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            return False

    def stop(self, grace: float = 1.0) -> None:
        mine = self.owns_socket()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if mine and self.owns_socket():
            self.path.unlink(missing_ok=True)
        elif self._inode is not None:
            log.info("Policy Sync socket %s belongs to another agent now; left in place", self.path)
        self._inode = None
