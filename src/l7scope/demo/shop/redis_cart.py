"""`redis-cart`: a tiny key-value server speaking a subset of the Redis protocol (RESP), and
the client cartservice uses. Plain TCP, so the capture shows it as `tcp`.

Commands: PING, GET key, SET key value, DEL key. The client opens one connection per cart
operation (and closes it), so one operation is one TCP connection in Envoy's log: exactly
countable.
"""

from __future__ import annotations

import socket
import socketserver
import threading


class ProtocolError(ValueError):
    pass


def encode_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class Reader:
    """Reads RESP values from a binary file object."""

    MAX_BULK = 1 << 20

    def __init__(self, f: object) -> None:
        self._f = f

    def _line(self) -> bytes:
        line: bytes = self._f.readline(self.MAX_BULK + 2)  # type: ignore[attr-defined]
        if not line:
            raise EOFError
        if not line.endswith(b"\r\n"):
            raise ProtocolError("line too long or not CRLF-terminated")
        return line[:-2]

    def read(self) -> bytes | int | str | list[bytes] | None:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise ProtocolError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            if n > self.MAX_BULK:
                raise ProtocolError("bulk string too long")
            data: bytes = self._f.read(n + 2)  # type: ignore[attr-defined]
            if len(data) != n + 2:
                raise EOFError
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if not 0 <= n <= 16:
                raise ProtocolError("bad array length")
            items: list[bytes] = []
            for _ in range(n):
                v = self.read()
                if not isinstance(v, bytes):
                    raise ProtocolError("array items must be bulk strings")
                items.append(v)
            return items
        raise ProtocolError(f"unknown type byte {kind!r}")


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[bytes, bytes] = {}

    def execute(self, cmd: list[bytes]) -> bytes:
        """One command -> the encoded reply."""
        if not cmd:
            return b"-ERR empty command\r\n"
        name = cmd[0].upper()
        with self._lock:
            if name == b"PING":
                return b"+PONG\r\n"
            if name == b"GET" and len(cmd) == 2:
                v = self._data.get(cmd[1])
                return b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v)
            if name == b"SET" and len(cmd) == 3:
                self._data[cmd[1]] = cmd[2]
                return b"+OK\r\n"
            if name == b"DEL" and len(cmd) == 2:
                return b":%d\r\n" % (1 if self._data.pop(cmd[1], None) is not None else 0)
        return b"-ERR unknown command or wrong number of arguments\r\n"


class _Handler(socketserver.StreamRequestHandler):
    server: RedisServer

    def handle(self) -> None:
        reader = Reader(self.rfile)
        while True:
            try:
                value = reader.read()
            except EOFError:
                return
            except (ProtocolError, ValueError) as e:
                self.wfile.write(b"-ERR protocol: %s\r\n" % str(e).encode()[:200])
                return
            if not isinstance(value, list):
                self.wfile.write(b"-ERR expected a command array\r\n")
                return
            self.wfile.write(self.server.store.execute(value))


class RedisServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int]) -> None:
        self.store = Store()
        super().__init__(addr, _Handler)


class RedisClient:
    """One connection per operation: connect, run the commands, close."""

    def __init__(self, address: tuple[str, int], source_ip: str | None = None,
                 timeout_s: float = 5.0) -> None:
        self._address = address
        self._source = (source_ip, 0) if source_ip else None
        self._timeout = timeout_s

    def connect(self) -> socket.socket:
        return socket.create_connection(self._address, timeout=self._timeout,
                                        source_address=self._source)

    def run(self, sock: socket.socket, *commands: tuple[bytes, ...]) -> list[object]:
        """Send the commands on an open connection and read one reply each."""
        sock.sendall(b"".join(encode_command(*c) for c in commands))
        reader = Reader(sock.makefile("rb"))
        return [reader.read() for _ in commands]
