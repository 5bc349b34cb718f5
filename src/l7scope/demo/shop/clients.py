"""How a shop pod calls other Services: one gRPC channel per Service (h2c, no retries, the
Service's name as :authority), each call counted in `CallCounts`.

With `source_ip` (the `--no-netns` fallback, where every pod shares the host's loopback) the
channel goes through a tiny in-process relay that connects from the pod's own address, because
grpcio cannot choose a source address; that keeps "which pod called" visible to the node agent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from l7scope.demo.netrelay import pump
from l7scope.demo.shop.counts import CallCounts

T = TypeVar("T")

#: Deadline of every call: far above the slowest injected delay, so a call never expires
#: before its stream reached the proxy (which would make it uncountable).
CALL_TIMEOUT_S = 15.0


def reached_peer(err: grpc.RpcError) -> bool:
    """Did the call get an answer from the other end (proxy or Service)?

    Only a failure to connect at all stays on this side; every other status, including
    UNAVAILABLE answered by a proxy, was seen on the wire.
    """
    code = err.code() if hasattr(err, "code") else None
    if code != grpc.StatusCode.UNAVAILABLE:
        return True
    details = (err.details() if hasattr(err, "details") else "") or ""
    lowered = details.lower()
    return not ("failed to connect" in lowered or "connection refused" in lowered
                or "connect failed" in lowered)


class Relay:
    """Accepts on a unix socket and connects to `target` from `source_ip`, pumping bytes."""

    def __init__(self, path: Path, target: tuple[str, int], source_ip: str) -> None:
        self.path = path
        self._target = target
        self._source = (source_ip, 0)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(64)
        threading.Thread(target=self._accept, name=f"relay-{path.name}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            up = socket.create_connection(self._target, timeout=10, source_address=self._source)
        except OSError:
            conn.close()
            return
        up.settimeout(None)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(up, conn, True), daemon=True).start()
        pump(conn, up, close_src=True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Backend:
    """A channel to one Service, and `call()` that counts every call it makes."""

    def __init__(self, name: str, address: tuple[str, int], service_port: int,
                 counts: CallCounts, stub_factory: Callable[[grpc.Channel], Any],
                 source_ip: str | None = None, relay_dir: Path | None = None) -> None:
        self.name = name
        self._counts = counts
        self._relay: Relay | None = None
        target = f"{address[0]}:{address[1]}"
        if source_ip is not None:
            assert relay_dir is not None, "a relay needs a directory for its socket"
            self._relay = Relay(relay_dir / f"{counts.pod}-{name}.sock", address, source_ip)
            target = f"unix://{self._relay.path}"
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.default_authority", f"{name}:{service_port}"),
            ("grpc.enable_retries", 0),
            ("grpc.enable_http_proxy", 0),
            ("grpc.primary_user_agent", f"shop-{counts.pod}"),
        ])
        self.stub = stub_factory(self.channel)

    def call(self, method: Callable[..., T], request: object) -> T:
        try:
            result = method(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as e:
            if reached_peer(e):
                self._counts.completed(self.name)
            else:
                self._counts.failed(self.name)
            raise
        self._counts.completed(self.name)
        return result

    def close(self) -> None:
        self.channel.close()
        if self._relay is not None:
            self._relay.close()
