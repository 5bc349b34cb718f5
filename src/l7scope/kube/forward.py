"""A local port that leads into a pod: `l7scope dashboard` and `-P/--port-forward`.

`Forwarder` listens on a loopback port; every connection accepted there gets a stream of its
own from `dial()` (`Kube.open_port`: the API server's `pods/portforward`), and one thread
copies bytes both ways until either side closes. Connections are bounded (`max_connections`;
one over the cap is closed at once and counted), and so are the dial failures it remembers.
Nothing here imports the Kubernetes client: the dialer is injected.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class Stream(Protocol):
    sock: socket.socket

    def error(self) -> str | None: ...

    def close(self) -> None: ...


@dataclass
class ForwardStats:
    accepted: int = 0
    refused_over_cap: int = 0
    dial_failures: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    last_error: str = ""


class Forwarder:
    def __init__(self, dial: Callable[[], Stream], *, host: str = "127.0.0.1", port: int = 0,
                 max_connections: int = 64) -> None:
        self._dial = dial
        self.max_connections = max_connections
        self.stats = ForwardStats()
        self._lock = threading.Lock()
        self._active = 0
        self._closed = threading.Event()
        self._listener = socket.create_server((host, port), backlog=max_connections)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, name="l7scope-forward", daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def __enter__(self) -> Forwarder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._active >= self.max_connections:
                    self.stats.refused_over_cap += 1
                    conn.close()
                    continue
                self._active += 1
                self.stats.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), name="l7scope-forward-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            try:
                stream = self._dial()
            except Exception as e:  # the API server refused or is unreachable: this connection only
                with self._lock:
                    self.stats.dial_failures += 1
                    self.stats.last_error = str(e)[:500]
                log.warning("port-forward: cannot open a stream to the pod: %s", e)
                return
            try:
                self._copy(conn, stream.sock)
            finally:
                err = stream.error()
                if err:
                    with self._lock:
                        self.stats.last_error = err[:500]
                    log.warning("port-forward: the pod's side reported: %s", err)
                stream.close()
        finally:
            conn.close()
            with self._lock:
                self._active -= 1

    def _copy(self, a: socket.socket, b: socket.socket) -> None:
        """Bytes both ways until one side has closed and what it sent is delivered."""
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = key.data
                    try:
                        data = src.recv(CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    try:
                        dst.sendall(data)
                    except OSError:
                        return
                    with self._lock:
                        if src is a:
                            self.stats.bytes_out += len(data)
                        else:
                            self.stats.bytes_in += len(data)
        finally:
            sel.close()
