"""The `--follow` cursor: stream every new record exactly once, in order, over the plain query API.

Records carry no id and many share an `end_time` (a node flushes a whole interval at once), and
ingest can be late (a node agent replays its spool). The cursor therefore keeps, for every
`end_time` second inside a sliding window, how many records it has printed and a digest of each
(a multiset: identical records are counted, not collapsed). Each poll:

1. asks the server how many records exist per `end_time` second in the window (one aggregation
   query, `group_by: ["time"], interval: 1`);
2. fetches only the seconds whose count grew, and prints the records whose digest is not yet
   accounted for (per second, `new = fetched multiset - printed multiset`);
3. counts, for seconds that have left the window, records that arrived after they left: those are
   reported as "late, not shown" (never silently lost).

Pure logic: no I/O, no clock; `observe.cli` drives it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

Record = Mapping[str, Any]

#: The server-side sort (the API takes at most 8 keys): end_time first, then the fields that tell
#: apart the records one node flushes for one interval, so pages never overlap in practice.
SERVER_ORDER: tuple[str, ...] = (
    "end_time", "host", "src_namespace", "src_name_aggr", "dest_name_aggr", "url", "method",
    "response_code",
)
#: The full client-side order: records equal on all of these are interchangeable. Output is sorted
#: by it within each end_time second, so it does not depend on how the server breaks ties.
ORDER_FIELDS: tuple[str, ...] = (
    *SERVER_ORDER, "start_time", "src_type", "dest_service_namespace", "dest_service_name",
    "dest_service_port", "dest_namespace", "dest_type", "dest_port_num", "type", "user_agent",
    "count", "duration_mean", "duration_max", "bytes_in", "bytes_out", "tls_sni",
)


def order_key(r: Record) -> tuple[Any, ...]:
    return tuple(r.get(f) for f in ORDER_FIELDS)


_enc = msgspec.json.Encoder(order="sorted")


def digest(r: Record) -> bytes:
    return hashlib.blake2b(_enc.encode(r), digest_size=16).digest()


@dataclass
class FollowCursor:
    """Records with `start < end_time` are followed; `window` seconds of history are kept."""

    start: int
    window: int = 300
    printed: dict[int, Counter[bytes]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    low: int = 0  # seconds <= low have left the window
    left_window: int = 0  # records counted in seconds that left the window
    late: int = 0  # records found after their second left the window (reported, not shown)
    polls: int = 0

    def __post_init__(self) -> None:
        self.low = self.start

    def range(self, now: int) -> tuple[int, int]:
        """(from, to) of the window to check at server time `now`: from < end_time <= to."""
        return max(self.low, now - self.window), max(now, self.low)

    def changed(self, per_second: Mapping[int, int]) -> list[int]:
        """Seconds whose record count differs from what was printed, oldest first."""
        return sorted(s for s, n in per_second.items() if s > self.low and n != self.counts.get(s, 0))

    def accept(self, second: int, records: Sequence[Record]) -> list[Record]:
        """All records of `second` as the server has them now -> the ones not printed yet."""
        seen = self.printed.setdefault(second, Counter())
        fetched: Counter[bytes] = Counter()
        fresh: list[Record] = []
        for r in records:
            d = digest(r)
            fetched[d] += 1
            if fetched[d] > seen[d]:
                fresh.append(r)
        for d, n in fetched.items():
            if n > seen[d]:
                seen[d] = n
        self.counts[second] = max(self.counts.get(second, 0), sum(seen.values()))
        fresh.sort(key=order_key)
        return fresh

    def advance(self, new_low: int) -> None:
        """Seconds <= new_low leave the window: forget their digests, keep their totals."""
        if new_low <= self.low:
            return
        for s in [s for s in self.counts if s <= new_low]:
            self.left_window += self.counts.pop(s)
            self.printed.pop(s, None)
        for s in [s for s in self.printed if s <= new_low]:
            self.printed.pop(s)
        self.low = new_low

    def check_late(self, total_left: int) -> int:
        """`total_left`: records the server now has in (start, low]. Returns newly found late ones."""
        extra = total_left - self.left_window - self.late
        if extra > 0:
            self.late += extra
            return extra
        return 0
