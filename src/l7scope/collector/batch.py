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

Speed: `add()` is the hot path: one C-level `attrgetter` call builds the key, one dict lookup
finds its entry (a plain list, the cheapest mutable record), and a few integer updates merge the
line. Memory is bounded by the number of keys, not lines. No clock is read here: the caller
decides when an interval ends.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

from l7scope.contracts import latency
from l7scope.contracts.envoy_log import REPORTER_DESTINATION, EnvoyLogLine, split_address
from l7scope.contracts.policysync_pb2 import DataplaneStats, HTTPData, Protocol, Statistic

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

# Entry layout (a list, indexed by these constants).
COUNT, DUR_SUM, DUR_MAX, LAT_SUM, SENT, RECEIVED, US_SUM, US_MAX, HIST, FIRST = range(10)

_bucket_table: list[int] = []


def _buckets() -> list[int]:
    """Histogram bucket of every duration below 2**17 us (131 ms), built on first use."""
    if not _bucket_table:
        _bucket_table.extend(latency.bucket_of(us) for us in range(1 << 17))
    return _bucket_table


def _int32(v: int) -> int:
    return v if v <= INT32_MAX else INT32_MAX


@dataclass
class FlushResult:
    """What one interval produced."""

    messages: list[DataplaneStats] = field(default_factory=list)
    requests: int = 0  # requests counted in `messages` (sum of their HTTP_DATA statistics)
    entries: int = 0  # unique keys sent as HTTPData
    over_cap: int = 0  # requests that got no HTTPData of their own (counted per tuple only)
    invalid: int = 0  # decoded lines without a usable tuple or with another reporter


class Batcher:
    """Collects decoded lines for one interval; `flush()` turns them into DataplaneStats."""

    def __init__(self, requests_per_interval: int = -1, *, node_name: str = "",
                 collector_name: str = COLLECTOR_NAME) -> None:
        self.cap = requests_per_interval if requests_per_interval > 0 else sys.maxsize
        self.node_name = node_name
        self.collector_name = collector_name
        self._entries: dict[Key, list[Any]] = {}
        self._over: dict[TupleKey, int] = {}
        self.pending_requests = 0  # lines added since the last flush

    def add(self, lines: Iterable[EnvoyLogLine]) -> int:
        """Add decoded lines; returns how many of them were over the unique-key cap."""
        entries = self._entries
        get = entries.get
        key_of = _key_of
        cap = self.cap
        over = self._over
        table = _buckets()
        table_len = len(table)
        bucket_of = latency.bucket_of
        n = 0
        n_over = 0
        for ln in lines:
            n += 1
            k = key_of(ln)
            e = get(k)
            if e is None:
                if len(entries) >= cap:
                    t = k[:_TUPLE_LEN]
                    over[t] = over.get(t, 0) + 1
                    n_over += 1
                    continue
                e = entries[k] = [0, 0, 0, 0, 0, 0, 0, 0, {}, ln]
            d = ln.duration or 0
            us = ln.duration_us
            if us is None:
                us = d * 1000
            e[0] += 1
            e[1] += d
            if d > e[2]:
                e[2] = d
            ust = ln.upstream_service_time
            if ust:
                try:  # noqa: SIM105 (contextlib.suppress is slower on this hot path)
                    e[3] += d - int(ust)
                except ValueError:
                    pass
            e[4] += ln.bytes_sent or 0
            e[5] += ln.bytes_received or 0
            e[6] += us
            if us > e[7]:
                e[7] = us
            b = table[us] if 0 <= us < table_len else bucket_of(us)
            h = e[8]
            h[b] = h.get(b, 0) + 1
        self.pending_requests += n
        return n_over

    def flush(self) -> FlushResult:
        """End the interval: one DataplaneStats per tuple, and reset."""
        entries, over = self._entries, self._over
        self._entries, self._over = {}, {}
        self.pending_requests = 0
        res = FlushResult()
        by_tuple: dict[TupleKey, list[tuple[Key, list[Any]]]] = {}
        for k, e in entries.items():
            by_tuple.setdefault(k[:_TUPLE_LEN], []).append((k, e))
        for t in over:
            by_tuple.setdefault(t, [])
        for t, group in by_tuple.items():
            n_over = over.get(t, 0)
            valid = [(k, e) for k, e in group
                     if k[_K_REPORTER] is None or k[_K_REPORTER] == REPORTER_DESTINATION]
            kept = sum(e[COUNT] for _, e in valid)
            res.invalid += sum(e[COUNT] for _, e in group) - kept
            src_ip, src_port = split_address(t[0])  # type: ignore[arg-type]
            dst_ip, dst_port = split_address(t[1])  # type: ignore[arg-type]
            if not src_ip or not dst_ip or (not valid and not n_over):
                res.invalid += kept + n_over
                continue
            msg = DataplaneStats(
                src_ip=src_ip, dst_ip=dst_ip, src_port=src_port, dst_port=dst_port,
                protocol=Protocol(name="tcp"), reporter_node=self.node_name)
            msg.stats.append(Statistic(
                direction=Statistic.IN, relativity=Statistic.DELTA, kind=Statistic.HTTP_DATA,
                value=kept + n_over))
            for k, e in valid:
                msg.http_data.append(self._http_data(k, e))
            if not valid:  # every request of this tuple was over the cap
                msg.http_data.append(HTTPData(type=str(t[2] or ""), count=0,
                                              collector_type=COLLECTOR_TYPE,
                                              collector_name=self.collector_name))
            res.messages.append(msg)
            res.requests += kept + n_over
            res.entries += len(valid)
            res.over_cap += n_over
        return res

    def _http_data(self, k: Key, e: list[Any]) -> HTTPData:
        grpc = k[_K_GRPC]
        flags = k[_K_FLAGS]
        first: EnvoyLogLine = e[FIRST]
        hd = HTTPData(
            duration=_int32(e[DUR_SUM]), duration_max=_int32(e[DUR_MAX]),
            latency=_int32(max(e[LAT_SUM], 0)),
            response_code=_int32(k[_K_CODE] or 0),  # type: ignore[arg-type]
            bytes_sent=_int32(e[SENT]), bytes_received=_int32(e[RECEIVED]),
            bytes_sent_total=e[SENT], bytes_received_total=e[RECEIVED],
            user_agent=str(k[_K_UA] or ""), request_path=str(k[_K_PATH] or ""),
            request_method=str(k[_K_METHOD] or ""), domain=str(k[_K_DOMAIN] or ""),
            type=str(k[2] or ""), count=_int32(e[COUNT]),
            duration_us_sum=e[US_SUM], duration_us_max=e[US_MAX],
            tls_sni=first.requested_server_name or "", upstream_host=first.upstream_host or "",
            protocol=first.protocol or "",
            response_flags="" if flags in (None, "-") else str(flags),
            grpc_status="" if grpc is None or grpc == "-" else str(grpc),
            collector_type=COLLECTOR_TYPE, collector_name=self.collector_name,
        )
        hd.duration_hist.update(e[HIST])
        return hd
