"""Resource bounds of the HTTP shell, written once: body sizes, JSON nesting, gzip, bodies in
flight, timeouts. Pure helpers; api.py and cli.py apply them (docs/server.md, "Limits")."""

from __future__ import annotations

import re
import zlib
from typing import Final

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
