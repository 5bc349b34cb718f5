"""Request detail on the node agent: the Service's mode, the record's key, the per-flush bound.

The collector sends the requests it kept (`DataplaneStats.request_details`, request part of a
`contracts.detail.DetailRecord`). For each, `DetailKeeper.add()` resolves the Service the same
way the aggregated entry was (`enrich`), keeps the record only when the Service's mode
(annotation `l7scope.io/detail`, else `l7Detail.defaultMode`) covers its reason, and fills in the
key fields of the aggregated record it was counted in (`Aggregator.key_fields`), so a record's
drill-down finds it. At most `l7Detail.maxPerInterval` records per flush; the rest is dropped
and counted (`details_dropped`). `flush()` stamps the interval and the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from l7scope.contracts import detail as dc
from l7scope.contracts import policysync_pb2 as pb
from l7scope.node.aggregate import Aggregator, Update
from l7scope.node.enrich import Enricher

log = logging.getLogger(__name__)

_KEY_COPY = ("src_name_aggr", "src_namespace", "src_type", "dest_name_aggr", "dest_namespace",
             "dest_type", "dest_service_name", "dest_service_namespace", "dest_service_port", "url")


@dataclass
class DetailStats:
    received: int = 0  # records the collectors sent
    kept: int = 0  # records shipped (after mode and bound)
    off: int = 0  # left out by the Service's mode (not a drop: not asked for)
    dropped: int = 0  # over maxPerInterval
    bad: int = 0  # did not decode


class DetailKeeper:
    def __init__(self, settings: dc.DetailSettings, node_name: str, start: float) -> None:
        self.settings = settings
        self.node_name = node_name
        self._start = start
        self._held: list[dc.DetailRecord] = []
        self.stats = DetailStats()

    def mode(self, en: Enricher, name: str, namespace: str) -> str:
        svc = en.cache.service(namespace, name) if name and namespace else None
        ann = svc.annotations.get(dc.ANNOTATION) if svc is not None else None
        return dc.mode_of(ann, self.settings.default_mode)

    def add(self, ds: pb.DataplaneStats, en: Enricher, agg: Aggregator) -> None:
        """The kept requests of one Report (after its entries went into `agg`)."""
        if not ds.request_details:
            return
        src = en.endpoint(ds.src_ip)
        src_port = ds.src_port if 0 <= ds.src_port <= 65535 else 0
        dst_port = ds.dst_port if 0 <= ds.dst_port <= 65535 else 0
        cap = self.settings.max_per_interval
        st = self.stats
        for raw in ds.request_details:
            st.received += 1
            try:
                rec = dc.decode_record(raw)
            except dc.DetailError as e:
                st.bad += 1
                log.debug("bad detail record: %s", e)
                continue
            dst = en.destination(ds.dst_ip, rec.upstream_host)
            svc = en.service(rec.domain, rec.type, rec.upstream_host, ds.dst_ip, dst_port,
                             dst.namespace)
            if not dc.keeps(self.mode(en, svc.name, svc.namespace), rec.reason):
                st.off += 1
                continue
            if len(self._held) >= cap:
                st.dropped += 1
                continue
            code = int(rec.response_code) if rec.response_code.isdigit() else 0
            u = Update(src=src, src_port=src_port, dst=dst, dst_port=dst_port, service=svc,
                       domain=rec.domain, path=rec.path, method=rec.method, response_code=code,
                       user_agent=rec.user_agent, type=rec.type, protocol=rec.protocol,
                       grpc_status=rec.grpc_status)
            key = agg.key_fields(u)
            for f in _KEY_COPY:
                setattr(rec, f, key[f])
            rec.method, rec.response_code, rec.grpc_status = (
                str(key["method"]), str(key["response_code"]), str(key["grpc_status"]))
            self._held.append(rec)

    def flush(self, now: float) -> list[dc.DetailRecord]:
        """The interval's records, stamped with its times (the aggregated records' own)."""
        start, end = int(self._start), int(now)
        self._start = now
        held, self._held = self._held, []
        for r in held:
            r.start_time, r.end_time, r.host = start, end, self.node_name
        self.stats.kept += len(held)
        return held
