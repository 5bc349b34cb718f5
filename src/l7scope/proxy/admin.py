"""A tiny client for Envoy's admin endpoint, also inside a network namespace.

The admin endpoint listens on loopback only. When Envoy runs in another network namespace, its
loopback is that namespace's: we open the TCP socket from a short-lived thread that has entered
the namespace with setns(2) (a socket keeps the namespace it was created in; the calling
process is not moved). One HTTP/1.1 request per connection: a handful of calls a second.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
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


def request(host: str, port: int, path: str, *, method: str = "GET",
            netns: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """One admin request; returns (status, body). Raises AdminError when unreachable."""
    try:
        sock = connect(host, port, netns, timeout)
    except OSError as e:
        raise AdminError(f"admin {host}:{port} unreachable: {e}") from e
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = sock  # already connected, in the right namespace
    try:
        conn.request(method, path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise AdminError(f"admin {host}:{port}{path}: {e}") from e
    finally:
        conn.close()
