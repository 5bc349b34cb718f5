"""A tiny client for Envoy's admin endpoint: a unix socket, or loopback TCP, also inside a
network namespace.

An admin address is `unix:/path` (in a cluster: a socket on the pod's own volume, so nothing on
the host network reaches admin), `127.0.0.1:9901` or `http://127.0.0.1:9901` (standalone and
the demo). A unix socket is found through the file system, whatever the network namespace.
For TCP inside another network namespace, whose loopback is that namespace's, we open the
socket from a short-lived thread that has entered the namespace with setns(2) (a socket keeps
the namespace it was created in; the calling process is not moved). One HTTP/1.1 request per
connection: a handful of calls a second.

`python -m l7scope.proxy.admin ADDRESS [PATH]` exits 0 when PATH (default `/ready`) answers
200: the DaemonSet's exec probe (stdlib imports only, so it starts in milliseconds).
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class AdminError(RuntimeError):
    """The admin endpoint could not be reached or answered garbage."""


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread that has entered `netns` (a name under /run/netns, or a path).

    With `netns=None` it simply calls `fn()`. Sockets created by `fn` stay in that namespace
    and may be used from any thread afterwards.
    """
    if netns is None:
        return fn()
    path = netns if netns.startswith("/") else f"/run/netns/{netns}"
    box: dict[str, T] = {}
    err: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({path}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as e:  # handed to the caller below
            err.append(e)

    t = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return box["v"]


def connect(host: str, port: int, netns: str | None = None,
            timeout: float = 2.0) -> socket.socket:
    """A TCP connection to host:port, made from inside `netns` when given."""
    def dial() -> socket.socket:
        return socket.create_connection((host, port), timeout=timeout)
    return in_netns(netns, dial)


def unix_path(address: str) -> str | None:
    """The socket path of `unix:/p` or `unix:///p`; None for a TCP address."""
    if not address.startswith("unix:"):
        return None
    p = address[len("unix:"):]
    return "/" + p.lstrip("/") if p.startswith("//") else p


def request(host: str, port: int, path: str, *, method: str = "GET",
            netns: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """One admin request over TCP; returns (status, body). Raises AdminError when unreachable."""
    try:
        sock = connect(host, port, netns, timeout)
    except OSError as e:
        raise AdminError(f"admin {host}:{port} unreachable: {e}") from e
    return _exchange(sock, host, port, f"{host}:{port}", path, method, timeout)


def request_at(address: str, path: str, *, method: str = "GET", netns: str | None = None,
               timeout: float = 2.0) -> tuple[int, bytes]:
    """One admin request to `unix:/path`, `host:port` or `http://host:port`."""
    sock_path = unix_path(address)
    if sock_path is None:
        host, port = _host_port(address)
        return request(host, port, path, method=method, netns=netns, timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sock_path)
    except OSError as e:
        sock.close()
        raise AdminError(f"admin {address} unreachable: {e}") from e
    return _exchange(sock, "localhost", None, address, path, method, timeout)


#: the admin `/stats` filter for `completed_requests`
COMPLETED_FILTER = "/stats?filter=downstream_rq_completed"


def completed_requests(stats_text: str) -> int:
    """HTTP requests Envoy's listeners completed, from the text of admin `COMPLETED_FILTER`
    (the admin listener's own requests left out): what the collector must find in the log."""
    total = 0
    for line in stats_text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("http.") and not name.startswith("http.admin.") \
                and name.endswith(".downstream_rq_completed"):
            total += int(value)
    return total


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.removeprefix("http://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AdminError(f"admin address must be unix:/path or host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _exchange(sock: socket.socket, host: str, port: int | None, where: str, path: str,
              method: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = sock  # already connected (in the right namespace, or to the unix socket)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise AdminError(f"admin {where}{path}: {e}") from e
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    """Probe: exit 0 when the admin path answers 200, 1 otherwise (reason on stderr)."""
    if not 1 <= len(argv) <= 2:
        print("usage: python -m l7scope.proxy.admin ADDRESS [PATH]", file=sys.stderr)
        return 2
    try:
        status, body = request_at(argv[0], argv[1] if len(argv) > 1 else "/ready", timeout=2.0)
    except AdminError as e:
        print(e, file=sys.stderr)
        return 1
    if status != 200:
        print(f"{status} {body[:200]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
