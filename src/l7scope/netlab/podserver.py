"""Small servers to run inside a pod: `python -m l7scope.netlab.podserver MODE --port N`.

Modes:
- `http`: threaded HTTP/1.1 app. Status from the path (`/status/404/...` answers 404, else
  200), response body of `x-reply-bytes` bytes (default 2), request bodies read and counted;
  the response headers `x-seen-headers` / `x-seen-host` / `x-seen-peer` tell which header
  names (in the case they arrived), which Host and which peer address (ip:port) the server saw.
  A request header `x-delay-ms: N` delays the answer N ms (at most 10 s); `x-set-cookie: V`
  answers with `set-cookie: V` (request-detail tests: slow requests, redaction).
  Nagle is off and the listen backlog is large (environment notes: both matter).
- `https`: the same app behind TLS (`--cert`, `--key`).
- `fixed`: asyncio server that answers every request with the same small 200 response, as fast
  as Python can (for latency benchmarks; requests without bodies only).
- `echo`: raw TCP echo (for the plain-TCP chain).
- `grpc`: gRPC over h2c with one method `/package.Service/Method`: echoes `pong:<payload>`,
  and answers the payload `fail` with status NOT_FOUND (5).

Prints `READY <port>` on stdout once it listens, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GRPC_SERVICE = "package.Service"
GRPC_METHOD = "Method"


class _App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_header = "podserver"

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        status = 200
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) > 2 and parts[1] == "status" and parts[2].isdigit():
            status = int(parts[2])
        n = int(self.headers.get("x-reply-bytes") or 2)
        body = b"x" * n
        delay = self.headers.get("x-delay-ms")
        if delay and delay.isdigit():
            time.sleep(min(int(delay), 10_000) / 1000)
        self.send_response(status)
        if self.headers.get("x-set-cookie"):
            self.send_header("set-cookie", self.headers["x-set-cookie"])
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(n))
        self.send_header("x-request-bytes", str(length))
        # What reached the server, for transparency checks: header names as received, and Host.
        self.send_header("x-seen-headers", ",".join(self.headers.keys()))
        self.send_header("x-seen-host", self.headers.get("host", ""))
        peer = str(self.client_address[0]).removeprefix("::ffff:")  # an IPv4 peer on the v6 socket
        self.send_header("x-seen-peer", f"{peer}:{self.client_address[1]}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


class _DualServer(_Server):
    """IPv6 and IPv4 on one socket (`::`, IPV6_V6ONLY off)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _http_server(port: int) -> _Server:
    try:
        return _DualServer(("::", port), _NoDelayApp)
    except OSError:  # IPv6 disabled in this namespace
        return _Server(("0.0.0.0", port), _NoDelayApp)


class _NoDelayApp(_App):
    disable_nagle_algorithm = True


def _ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def serve_http(port: int, tls: ssl.SSLContext | None = None) -> None:
    srv = _http_server(port)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    _ready(port)
    srv.serve_forever()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def serve_echo(port: int) -> None:
    srv = _EchoServer(("0.0.0.0", port), _Echo)
    _ready(port)
    srv.serve_forever()


_FIXED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")


class _Fixed(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        self.buf = b""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.t.write(_FIXED * n)


def serve_fixed(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(_Fixed, "0.0.0.0", port, backlog=1024)
        _ready(port)
        await srv.serve_forever()

    asyncio.run(main())


def serve_grpc(port: int) -> None:
    from concurrent import futures

    import grpc

    def method(request: bytes, context: Any) -> bytes:
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b"pong:" + request

    handler = grpc.method_handlers_generic_handler(
        GRPC_SERVICE, {GRPC_METHOD: grpc.unary_unary_rpc_method_handler(method)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    _ready(port)
    threading.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l7scope.netlab.podserver", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["http", "https", "fixed", "echo", "grpc"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args(argv)
    if a.mode == "http":
        serve_http(a.port)
    elif a.mode == "https":
        if not (a.cert and a.key):
            ap.error("https needs --cert and --key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        serve_http(a.port, ctx)
    elif a.mode == "fixed":
        serve_fixed(a.port)
    elif a.mode == "echo":
        serve_echo(a.port)
    else:
        serve_grpc(a.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
