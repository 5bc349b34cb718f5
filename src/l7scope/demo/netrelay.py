"""A TCP relay from a network namespace to this process's own namespace.

The node agents run inside their node's namespace and ship to the server, which runs in the
host namespace on loopback. The relay listens on `127.0.0.1:port` *inside* the node namespace
(the listening socket is created from a thread that entered it; a socket keeps its namespace)
and connects each accepted connection to `target` from the host namespace. No host routes or
addresses are needed, and nothing outlives the demo process.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from l7scope.proxy.admin import in_netns


class NetnsRelay:
    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self._target = target
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._sock = in_netns(netns, lambda: socket.create_server(listen, backlog=64))
        threading.Thread(target=self._accept, name=f"relay-{netns}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            up = socket.create_connection(self._target, timeout=5)
        except OSError:
            conn.close()
            return
        up.settimeout(None)
        with self._lock:
            self._conns.update((conn, up))
        t = threading.Thread(target=pump, args=(up, conn), daemon=True)
        t.start()
        pump(conn, up)
        t.join()
        with self._lock:
            self._conns.difference_update((conn, up))
        for c in (conn, up):
            with contextlib.suppress(OSError):
                c.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            for c in list(self._conns):
                with contextlib.suppress(OSError):
                    c.close()


def pump(src: socket.socket, dst: socket.socket, close_src: bool = False) -> None:
    """Copy bytes from src to dst until EOF or an error, then half-close dst (and close src)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        if close_src:
            with contextlib.suppress(OSError):
                src.close()
