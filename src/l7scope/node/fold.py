"""The node agent's hot path: Reports folded straight into the Aggregator's columns.

`Folder.add(ds)` gives the same records as `ingest.updates(ds)` + `Aggregator.add()` for each
update (the reference path, kept for tests and tools), without an `Update` per entry:

- each detailed entry is read once into a raw key (connection, Host, path, method, code, user
  agent, type, protocol, SNI, gRPC status, collector, upstream host) and looked up in a memo
  of this interval: the raw key's 64-bit hash -> the Aggregator's slot (an int per raw key, not
  its strings; as the collector's batching, two distinct raw keys of one interval share a hash
  with a probability of about n^2 / 2^65 for n keys: ~1e-10 for 50,000);
- only a new raw key is enriched (`Enricher`: endpoints per address, Service per Host), trimmed,
  templated and turned into the aggregation key (`aggregate.key_from`), once per interval;
- the entry's numbers are added to the slot's columns in place (Python ints: exact).

Order-dependent decisions (the per-node limit, a Service's route budget) are taken when a raw
key first appears, as the reference takes them on the first update of its key; so a memoized
raw key beyond the limit, or over the route budget, stays there for the interval, as in the
reference. The memo is dropped at every flush and settings change (the Aggregator's
`generation`) and when the metadata cache changes (its `version`: the reference would enrich
the next entries anew), and it holds at most `max_memo` raw keys (more are folded without it).

Entries with count 0 and requests counted beyond the entries (the overflow update, at most one
per Report) take the reference path (`ingest.overflow_update`).
"""

from __future__ import annotations

from typing import Final

from l7scope.contracts import latency
from l7scope.contracts import policysync_pb2 as pb
from l7scope.node import ingest
from l7scope.node.aggregate import Aggregator, Key, key_head, key_tail, key_url, trim_path
from l7scope.node.enrich import Enricher, ServiceRef

#: Memo values: a slot, plus OTHER when the key's route became OTHER_ROUTE (its requests are
#: counted in `route_other`); UNLOGGED(_OTHER) when the key is beyond the per-node limit.
OTHER: Final = 1 << 48
UNLOGGED: Final = -1
UNLOGGED_OTHER: Final = -2
Conn = tuple[str, int, str, int]  # src IP, src port (0 unless in the key), dst IP, dst port
RawKey = tuple[Conn, str, str, str, int, str, str, str, str, str, str, str, str]


class Folder:
    """Folds Reports into one Aggregator, enriching with one Enricher (the flush loop's)."""

    def __init__(self, aggregator: Aggregator, enricher: Enricher, max_memo: int = 50_000) -> None:
        self.aggregator = aggregator
        self.enricher = enricher
        self.max_memo = max_memo
        # by the 64-bit hash of the raw key (as the collector's batching, docs/collector.md): an
        # int per raw key, not the key's strings
        self._memo: dict[int, int] = {}
        self._contexts: dict[int, tuple[Key, ServiceRef]] = {}  # hash of (conn, upstream, Host, type)
        self._generation = -1
        self._version = -1

    def add(self, ds: pb.DataplaneStats) -> None:
        agg = self.aggregator
        if agg.generation != self._generation or self.enricher.cache.version != self._version:
            self._memo.clear()
            self._contexts.clear()
            self._generation = agg.generation
            self._version = self.enricher.cache.version
        stat = ingest.http_count(ds)
        src_ip, dst_ip = ds.src_ip, ds.dst_ip
        sp, dp = ds.src_port, ds.dst_port
        sp = sp if 0 <= sp <= 65535 and agg.settings.source_info == "IncludeL7SourceInfo" else 0
        dp = dp if 0 <= dp <= 65535 else 0
        conn = (src_ip, sp, dst_ip, dp)
        memo = self._memo
        counts, dur_sums, dur_maxes, lat_sums = agg.counts, agg.dur_sums, agg.dur_maxes, agg.lat_sums
        bytes_in, bytes_out, hists = agg.bytes_in, agg.bytes_out, agg.hists
        bucket_of = latency.bucket_of
        detailed = unlogged = other = 0
        first_empty: pb.HTTPData | None = None
        for hd in ds.http_data:
            c = hd.count
            if c <= 0:
                if first_empty is None:
                    first_empty = hd
                continue
            detailed += c
            key = (conn, hd.domain, hd.request_path, hd.request_method, hd.response_code,
                   hd.user_agent, hd.type, hd.protocol, hd.tls_sni, hd.grpc_status,
                   hd.collector_type, hd.collector_name, hd.upstream_host)
            h = hash(key)
            s = memo.get(h)
            if s is None:
                s = self._new(key, h)
            if s < 0:
                unlogged += c
                if s == UNLOGGED_OTHER:
                    other += c
                continue
            if s >= OTHER:
                other += c
                s -= OTHER
            counts[s] += c
            us_sum, us_max = hd.duration_us_sum, hd.duration_us_max
            if us_sum > 0 or us_max > 0:
                d_sum, d_max = us_sum * 1000, us_max * 1000
            else:
                d_sum, d_max = hd.duration, hd.duration_max
                d_sum = d_sum * 1_000_000 if d_sum > 0 else 0
                d_max = d_max * 1_000_000
            if d_sum > 0:
                dur_sums[s] += d_sum
            if d_max > dur_maxes[s]:
                dur_maxes[s] = d_max
            n = hd.latency
            if n > 0:
                lat_sums[s] += n * 1_000_000
            n = hd.bytes_received_total or hd.bytes_received
            if n > 0:
                bytes_in[s] += n
            n = hd.bytes_sent_total or hd.bytes_sent
            if n > 0:
                bytes_out[s] += n
            hist = hd.duration_hist
            acc = hists[s]
            if hist:
                for b, n in hist.items():
                    if b >= 0 and n > 0:
                        acc[b] = acc.get(b, 0) + n
            else:
                b = bucket_of(d_sum // 1000 // c)
                acc[b] = acc.get(b, 0) + c
        agg.seen += detailed
        agg.unlogged += unlogged
        agg.route_other += other
        if stat > detailed:
            agg.add(ingest.overflow_update(ds, self.enricher, first_empty, stat - detailed))

    def _new(self, key: RawKey, h: int) -> int:
        """Enrich and key a raw key seen for the first time this interval; memoize its slot."""
        agg = self.aggregator
        s = agg.settings
        conn, domain, path, method, code, ua, typ, proto, sni, grpc, ctype, cname, upstream = key
        ctx_key = hash((conn, upstream, domain, typ))
        ctx = self._contexts.get(ctx_key)
        if ctx is None:
            ctx = self._context(conn, upstream, domain, typ)
            if len(self._contexts) < self.max_memo:
                self._contexts[ctx_key] = ctx
        head, svc = ctx
        trimmed = trim_path(path, s.trim_url, s.num_url_path)
        other = False
        if agg.templater is not None and path:
            trimmed, other = agg.route(trimmed, svc)
        k = (*head, key_url(domain, trimmed, s),
             *key_tail(method, code if code > 0 else 0, ua, typ, ingest.protocol_of(proto, typ),
                       sni, grpc, ctype or ingest.DEFAULT_COLLECTOR_TYPE,
                       cname or ingest.DEFAULT_COLLECTOR_NAME, s))
        slot = agg.slot(k, False)
        if slot < 0:
            value = UNLOGGED_OTHER if other else UNLOGGED
        else:
            value = slot + OTHER if other else slot
        if len(self._memo) < self.max_memo:
            self._memo[h] = value
        return value

    def _context(self, conn: Conn, upstream: str, domain: str, log_type: str) -> tuple[Key, ServiceRef]:
        """The enriched part of a key: source, destination and Service."""
        en = self.enricher
        src_ip, sp, dst_ip, dp = conn
        dst = en.destination(dst_ip, upstream)
        svc = en.service(domain, log_type, upstream, dst_ip, dp, dst.namespace)
        return key_head(en.endpoint(src_ip), sp, dst, dp, svc, self.aggregator.settings), svc
