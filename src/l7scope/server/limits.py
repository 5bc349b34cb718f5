"""Resource bounds of the HTTP shell, written once: body sizes, JSON nesting, gzip, bodies in
flight, timeouts. Pure helpers; api.py and cli.py apply them (docs/server.md, "Limits")."""

from __future__ import annotations

import re
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
