"""Resource bounds of the HTTP shell, written once: body sizes, JSON nesting, gzip, bodies in
flight, timeouts. Pure helpers; api.py and cli.py apply them (docs/server.md, "Limits")."""

from __future__ import annotations

import asyncio
import re
import zlib
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

#: Deepest JSON nesting accepted in a query body or a bulk line (a record has 2 levels).
MAX_JSON_DEPTH: Final = 32
#: Query bodies (search, aggregation, service graph).
MAX_QUERY_BODY_BYTES: Final = 1024 * 1024

_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPEN: Final = frozenset(b"[{")


def too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when JSON text `data` nests arrays/objects deeper than `limit` (strings skipped).

    Cheap for ordinary input: only text with more than `limit` opening brackets is scanned."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for m in _TOKEN.finditer(data):
        c = data[m.start()]
        if c in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif c != 0x22:  # a closing bracket ('"' starts a skipped string)
            depth -= 1
    return False


class BodyError(ValueError):
    """A request body that cannot be used as a whole: the HTTP status and error code to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


#: Content-Encoding values a bulk body may have (Fluentd and Vector send gzip).
ENCODINGS: Final = ("identity", "gzip", "x-gzip")


def check_encoding(header: str | None) -> str:
    """The body's content coding ("identity" or "gzip"); BodyError 415 for anything else."""
    value = (header or "identity").strip().lower()
    if value not in ENCODINGS:
        raise BodyError(415, "unsupported_encoding",
                        f"Content-Encoding {value[:50]!r} is not supported (use gzip or none)")
    return "identity" if value == "identity" else "gzip"


def gunzip(data: bytes, limit: int) -> bytes:
    """The decompressed body (every gzip member, as `gzip -c a b` writes them), at most `limit`
    bytes: BodyError 413 for more (a decompression bomb costs at most `limit` bytes), 400 when
    the data is not gzip."""
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, limit - size + 1)
        except zlib.error as e:
            raise BodyError(400, "bad_request", f"the gzip body is corrupt: {e}") from None
        size += len(chunk)
        if size > limit or d.unconsumed_tail:
            raise BodyError(413, "body_too_large", f"the decompressed body is over the {limit}-byte limit")
        if not d.eof:
            raise BodyError(400, "bad_request", "the gzip body is truncated")
        out.append(chunk)
        rest = d.unused_data.lstrip(b"\0")  # gzip(1) pads some members with zeros
    return b"".join(out)


class Limits(BaseModel):
    """The server's resource limits (ServerConfig.limits; docs/server.md, "Limits")."""

    model_config = ConfigDict(extra="forbid")

    #: Bulk bodies read, decoded and stored at once; more wait up to body_wait_s, then get 503
    #: with Retry-After (each costs up to 64 MiB plus about 2.2x that while it is decoded).
    max_bodies_in_flight: int = Field(default=4, ge=1)
    body_wait_s: float = Field(default=5.0, ge=0)
    #: A request body must arrive completely within this (else 408).
    body_timeout_s: float = Field(default=60.0, gt=0)
    #: A connection must send a request's headers within this after it opens or after its
    #: previous answer (else it is closed): slow-header clients cannot hold sockets.
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: An idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive).
    keep_alive_s: int = Field(default=5, ge=1)
    #: Open connections at most; at the limit a new one closes the longest-idle connection (one
    #: waiting for request headers), or is itself closed when none is idle. Also capped below the
    #: process's file descriptor limit, so the server can always accept /healthz.
    max_connections: int = Field(default=1000, ge=4)
    #: Largest request header block (uvicorn's h11_max_incomplete_event_size).
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    #: A query (search, aggregation, service graph) is cancelled after this (503 query_timeout);
    #: also when its client disconnects.
    statement_timeout_s: float = Field(default=30.0, gt=0)


class BodyGate:
    """At most `limit` bulk bodies in flight; `acquire` waits up to `wait_s` for a slot."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit, self.wait_s = limit, wait_s
        self._sem: asyncio.Semaphore | None = None  # created on the server's event loop

    async def acquire(self) -> bool:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._sem.acquire(), self.wait_s)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        assert self._sem is not None
        self._sem.release()
