"""Per-interval batching of Envoy access-log lines into Policy Sync `DataplaneStats` messages.

The rules are Calico's l7-collector (spec section 5):

* key = connection tuple {src_ip, dst_ip, src_port, dst_port, type} + user_agent + request_path +
  request_method + response_code + domain. l7scope adds `grpc_status` and `response_flags` to the
  key, so a failed gRPC call (HTTP 200, grpc-status 14) never hides inside a successful one.
* a line whose key exists is merged (sums of duration, latency, bytes; max of duration; count),
  even when the batch is full; a new key is added only while the batch holds fewer than
  `requests_per_interval` keys (-1 or 0 = unlimited); otherwise the line is only counted.
* every line counts once for its tuple, kept or not: that count goes into the tuple's
  HTTP_DATA statistic, so the node agent knows how many requests it did not see in detail.

`flush()` returns one DataplaneStats per tuple (see `l7scope.contracts.policysync`), including
the tuples whose lines were all over the cap.

Speed: `add()` is the hot path. Per line it does three C-level calls (`attrgetter` for the key,
`hash`, `attrgetter` for the five numbers), one dict lookup by the key's hash (an int: comparing
two ints is far cheaper than comparing two 11-field tuples whose strings lie all over memory) and
one `list +=` of the numbers onto a flat per-key list (no per-line tuple is kept, so the garbage
collector has nothing new to scan). The numbers are folded per key later (`_fold`: whole-column
`sum`/`max`/`map` passes in C), when the interval ends or when more than `compact_lines` lines are
held, which bounds memory. Keys are told apart by their 64-bit hash: Python's string hash is
keyed per process (SipHash), so two distinct keys of one interval collide with a probability
around n^2 / 2^65 (n keys), which we accept. No clock is read here: the caller decides when an
interval ends.
"""

from __future__ import annotations

import sys

try:  # the C helper behind Counter.update, without its per-call Mapping isinstance check
    from collections import _count_elements as _count_into  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover (other Pythons)
    def _count_into(mapping: dict[int, int], iterable: Iterable[int]) -> None:
        for x in iterable:
            mapping[x] = mapping.get(x, 0) + 1
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

from l7scope.collector.detail import Picker
from l7scope.contracts import latency
from l7scope.contracts.envoy_log import REPORTER_DESTINATION, EnvoyLogLine, split_address
from l7scope.contracts.policysync_pb2 import DataplaneStats, Protocol, Statistic

INT32_MAX: Final = 2**31 - 1
COLLECTOR_TYPE: Final = "envoy-access-log"
COLLECTOR_NAME: Final = "daemonset"

# The batching key, in this order: the connection tuple parts first (see _TUPLE_LEN).
_key_of: Final = attrgetter(
    "downstream_remote_address", "downstream_local_address", "type",
    "user_agent", "request_path", "request_method", "response_code", "domain",
    "grpc_status", "response_flags", "reporter",
)
_TUPLE_LEN: Final = 3  # (remote address, local address, type)
_K_UA, _K_PATH, _K_METHOD, _K_CODE, _K_DOMAIN, _K_GRPC, _K_FLAGS, _K_REPORTER = range(3, 11)

Key = tuple[object, ...]
TupleKey = tuple[object, ...]

_num_of: Final = attrgetter("duration", "duration_us", "upstream_service_time", "bytes_sent",
                            "bytes_received")
Nums = tuple[int | None, int | None, str | None, int | None, int | None]
_NUMS: Final = 5  # values per line in a key's flat list of numbers (the fields of _num_of)

# Aggregate layout (a list, indexed by these constants).
COUNT, DUR_SUM, DUR_MAX, LAT_SUM, SENT, RECEIVED, US_SUM, US_MAX, HIST = range(9)

_bucket_table: list[int] = []


def _buckets() -> list[int]:
    """Histogram bucket of every duration below 2**17 us (131 ms), built on first use."""
    if not _bucket_table:
        _bucket_table.extend(latency.bucket_of(us) for us in range(1 << 17))
    return _bucket_table


def _int32(v: int) -> int:
    return v if v <= INT32_MAX else INT32_MAX


def _latency_ms(duration: int, ust: str | None) -> int:
    """Calico: latency = duration - upstream_service_time, when that header value parses."""
    if not ust:
        return 0
    try:
        return duration - int(ust)
    except ValueError:
        return 0


def _fold(agg: list[Any], nums: list[Any]) -> None:
    """Merge the numbers of one key's lines into its aggregate, column by column in C.

    `nums` is flat: the five `_num_of` values of each line one after the other (a slice with
    step 5 is one column). The common case (no nulls, numeric upstream_service_time) takes one
    C-level pass per column; a TypeError/ValueError from a null or odd value switches that
    column to the slow way.
    """
    durs, uss, usts, sent, received = (nums[i::_NUMS] for i in range(_NUMS))
    try:
        dsum: int = sum(durs)
    except TypeError:  # a null duration
        durs = [d or 0 for d in durs]
        dsum = sum(durs)
    try:
        lat: int = dsum - sum(map(int, usts))
    except (TypeError, ValueError):  # a missing or non-numeric upstream_service_time
        lat = sum(map(_latency_ms, durs, usts))
    try:
        us_sum: int = sum(uss)
    except TypeError:  # no duration_us: the millisecond duration stands in
        uss = [u if u is not None else d * 1000 for u, d in zip(uss, durs, strict=True)]
        us_sum = sum(uss)
    us_max: int = max(uss)
    table = _buckets()
    hist: dict[int, int] = agg[HIST]
    if us_max < len(table) and min(uss) >= 0:
        _count_into(hist, map(table.__getitem__, uss))
    else:
        _count_into(hist, map(latency.bucket_of, uss))
    try:
        n_sent: int = sum(sent)
    except TypeError:
        n_sent = sum(filter(None, sent))
    try:
        n_received: int = sum(received)
    except TypeError:
        n_received = sum(filter(None, received))
    agg[COUNT] += len(durs)
    agg[DUR_SUM] += dsum
    agg[DUR_MAX] = max(agg[DUR_MAX], max(durs))
    agg[LAT_SUM] += lat
    agg[SENT] += n_sent
    agg[RECEIVED] += n_received
    agg[US_SUM] += us_sum
    agg[US_MAX] = max(agg[US_MAX], us_max)


@dataclass
class FlushResult:
    """What one interval produced."""

    messages: list[DataplaneStats] = field(default_factory=list)
    requests: int = 0  # requests counted in `messages` (sum of their HTTP_DATA statistics)
    entries: int = 0  # unique keys sent as HTTPData
    over_cap: int = 0  # requests that got no HTTPData of their own (counted per tuple only)
    invalid: int = 0  # decoded lines without a usable tuple or with another reporter
    details: int = 0  # request detail records sent (DataplaneStats.request_details)


class Batcher:
    """Collects decoded lines for one interval; `flush()` turns them into DataplaneStats."""

    def __init__(self, requests_per_interval: int = -1, *, node_name: str = "",
                 collector_name: str = COLLECTOR_NAME, compact_lines: int = 25_000,
                 picker: Picker | None = None) -> None:
        self.cap = requests_per_interval if requests_per_interval > 0 else sys.maxsize
        self.node_name = node_name
        self.collector_name = collector_name
        self.compact_lines = compact_lines
        self.picker = picker  # request detail (collector/detail.py); None: off
        # key hash -> numbers of the lines not folded yet, flat (_NUMS values per line): a flat
        # list holds no per-line tuple, so the garbage collector has nothing new to scan
        self._nums: dict[int, list[Any]] = {}
        self._keys: dict[int, Key] = {}  # key hash -> key
        # key hash -> (SNI, upstream host, protocol) of its first line; only these three, so the
        # decoded line (about 2 KB with its strings) is not held for the whole interval
        self._first: dict[int, tuple[str | None, str | None, str | None]] = {}
        self._aggs: dict[int, list[Any]] = {}  # key hash -> folded numbers
        self._over: dict[TupleKey, int] = {}  # tuple -> requests over the cap
        self._held = 0
        self.pending_requests = 0  # lines added since the last flush

    def add(self, lines: Sequence[EnvoyLogLine]) -> int:
        """Add decoded lines; returns how many of them were over the unique-key cap."""
        nums = self._nums
        get = nums.get
        cap = self.cap
        n_over = 0
        for ln, h, v in zip(lines, map(hash, map(_key_of, lines)), map(_num_of, lines),
                            strict=True):
            lst = get(h)
            if lst is None:
                k = _key_of(ln)
                if len(nums) >= cap:
                    t = k[:_TUPLE_LEN]
                    self._over[t] = self._over.get(t, 0) + 1
                    n_over += 1
                    continue
                lst = nums[h] = []
                self._keys[h] = k
                self._first[h] = (ln.requested_server_name, ln.upstream_host, ln.protocol)
            lst += v
        if self.picker is not None:
            self.picker.pick(lines)
        n = len(lines)
        self.pending_requests += n
        self._held += n - n_over
        if self._held >= self.compact_lines:
            self._compact()
        return n_over

    def _compact(self) -> None:
        aggs = self._aggs
        for h, lst in self._nums.items():
            if lst:
                agg = aggs.get(h)
                if agg is None:
                    agg = aggs[h] = [0, 0, 0, 0, 0, 0, 0, 0, {}]
                _fold(agg, lst)
                lst.clear()
        self._held = 0

    def flush(self) -> FlushResult:
        """End the interval: one DataplaneStats per tuple, and reset."""
        self._compact()
        aggs, keys, first, over = self._aggs, self._keys, self._first, self._over
        self._nums, self._keys, self._first, self._aggs, self._over = {}, {}, {}, {}, {}
        self.pending_requests = 0
        details = self.picker.take() if self.picker is not None else {}
        res = FlushResult()
        by_tuple: dict[TupleKey, list[int]] = {}
        for h in aggs:
            by_tuple.setdefault(keys[h][:_TUPLE_LEN], []).append(h)
        for t in over:
            by_tuple.setdefault(t, [])
        for t, group in by_tuple.items():
            n_over = over.get(t, 0)
            valid = [h for h in group if keys[h][_K_REPORTER] in (None, REPORTER_DESTINATION)]
            kept = sum(aggs[h][COUNT] for h in valid)
            res.invalid += sum(aggs[h][COUNT] for h in group) - kept
            src_ip, src_port = split_address(t[0])  # type: ignore[arg-type]
            dst_ip, dst_port = split_address(t[1])  # type: ignore[arg-type]
            if not src_ip or not dst_ip or (not valid and not n_over):
                res.invalid += kept + n_over
                continue
            msg = DataplaneStats(
                src_ip=src_ip, dst_ip=dst_ip, src_port=src_port, dst_port=dst_port,
                protocol=Protocol(name="tcp"), reporter_node=self.node_name)
            msg.stats.add(direction=Statistic.IN, relativity=Statistic.DELTA,
                          kind=Statistic.HTTP_DATA, value=kept + n_over)
            entries = msg.http_data
            for h in valid:
                self._add_http_data(entries, keys[h], aggs[h], first[h])
            if not valid:  # every request of this tuple was over the cap
                entries.add(type=str(t[2] or ""), count=0, collector_type=COLLECTOR_TYPE,
                            collector_name=self.collector_name)
            kept_details = details.pop(t, None)
            if kept_details:
                msg.request_details.extend(kept_details)
                res.details += len(kept_details)
            res.messages.append(msg)
            res.requests += kept + n_over
            res.entries += len(valid)
            res.over_cap += n_over
        if details and self.picker is not None:  # tuples without a message (invalid lines)
            self.picker.dropped += sum(map(len, details.values()))
        return res

    def _add_http_data(self, entries: Any, k: Key, e: list[Any],
                       first: tuple[str | None, str | None, str | None]) -> None:
        """Append one HTTPData (`add()` builds it in place: no copy)."""
        grpc = k[_K_GRPC]
        flags = k[_K_FLAGS]
        entries.add(
            duration=_int32(e[DUR_SUM]), duration_max=_int32(e[DUR_MAX]),
            latency=_int32(max(e[LAT_SUM], 0)),
            response_code=_int32(k[_K_CODE] or 0),  # type: ignore[arg-type]
            bytes_sent=_int32(e[SENT]), bytes_received=_int32(e[RECEIVED]),
            bytes_sent_total=e[SENT], bytes_received_total=e[RECEIVED],
            user_agent=str(k[_K_UA] or ""), request_path=str(k[_K_PATH] or ""),
            request_method=str(k[_K_METHOD] or ""), domain=str(k[_K_DOMAIN] or ""),
            type=str(k[2] or ""), count=_int32(e[COUNT]),
            duration_us_sum=e[US_SUM], duration_us_max=e[US_MAX],
            tls_sni=first[0] or "", upstream_host=first[1] or "", protocol=first[2] or "",
            response_flags="" if flags in (None, "-") else str(flags),
            grpc_status="" if grpc is None or grpc == "-" else str(grpc),
            collector_type=COLLECTOR_TYPE, collector_name=self.collector_name,
            duration_hist=e[HIST],
        )
